"""AlpacaEval's instructions and reference outputs.

From a local file (option ``data_path``: a JSON list or JSONL, one object
per instruction with ``instruction``, ``output`` (the reference output) and
optionally ``generator`` and ``dataset``), or from the hub: the dataset
``tatsu-lab/alpaca_eval``, config ``alpaca_eval_gpt4_baseline`` by default
(AlpacaEval 2.0: the 805 instructions with GPT-4 Turbo's outputs as the
reference; config ``alpaca_eval`` holds AlpacaEval 1.0's text-davinci-003
outputs). Any other instruction set with reference outputs works the same.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from tapir.errors import TapirError
from tapir.jsonl import read_jsonl

HUB_REPO = "tatsu-lab/alpaca_eval"
DEFAULT_CONFIG = "alpaca_eval_gpt4_baseline"
STANDARD_COUNT = 805


@dataclass
class Instruction:
    index: int  # position in its set (the LC GLM's instruction index)
    instruction: str
    output: str  # the reference output
    generator: str
    dataset: str

    @property
    def item_id(self) -> str:
        return f"alpaca-{self.index}"


@dataclass
class InstructionSet:
    instructions: list[Instruction]
    source: str
    standard: bool  # the 805 AlpacaEval instructions from the hub, in full
    version: str = ""  # where the data came from and a hash of the whole set (before any subset)
    subset: str | None = None  # None: the whole set; else "<n> of <total> (<selection>) sha256:<12 hex>"
    total: int = 0  # instructions in the whole set

    @property
    def provenance(self) -> dict:
        """What a result row says about the instructions it covers."""
        return {"instructions": len(self.instructions), "set_size": self.total, "full_benchmark": self.standard,
                "instructions_digest": digest(self.instructions)}


def digest(items: Sequence[Instruction]) -> str:
    """``sha256:<12 hex>`` over every instruction, reference output and generator, in order."""
    h = hashlib.sha256()
    for i in items:
        h.update(json.dumps([i.instruction, i.output, i.generator], ensure_ascii=False).encode())
        h.update(b"\n")
    return f"sha256:{h.hexdigest()[:12]}"


def data_version(items: Sequence[Instruction], label: str) -> str:
    """``label@sha256:<12 hex>`` over the whole set (see :func:`digest`)."""
    return f"{label}@{digest(items)}"


def _records(rows: list, where: str) -> list[Instruction]:
    out = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise TapirError(f"{where}: entry {i} is not an object")
        missing = [k for k in ("instruction", "output") if not isinstance(row.get(k), str)]
        if missing:
            raise TapirError(f"{where}: entry {i} lacks {', '.join(missing)} (text fields instruction and output, "
                             f"the reference output, are required; generator and dataset are optional)")
        out.append(Instruction(i, row["instruction"], row["output"], str(row.get("generator") or "reference"),
                               str(row.get("dataset") or "custom")))
    if not out:
        raise TapirError(f"{where}: no instructions")
    return out


def load_file(path: str | Path) -> list[Instruction]:
    path = Path(path).expanduser()
    if not path.is_file():
        raise TapirError(f"AlpacaEval data_path {path} does not exist")
    if path.suffix == ".jsonl":
        rows = [row for _, row in read_jsonl(path)]
    else:
        try:
            rows = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise TapirError(f"{path}: not valid JSON ({exc})") from None
    if isinstance(rows, dict):  # {"eval": [...]} or a column dict
        rows = rows.get("eval", rows)
    if not isinstance(rows, list):
        raise TapirError(f"{path}: expected a list of objects with instruction and output")
    return _records(rows, str(path))


def load_hub(config: str = DEFAULT_CONFIG) -> list[Instruction]:
    """The instruction set from the hub: through ``datasets`` first, then the
    raw ``<config>.json`` file of the dataset repository (recent ``datasets``
    releases no longer run the repository's loading script)."""
    errors = []
    try:
        import datasets

        rows = list(datasets.load_dataset(HUB_REPO, config, split="eval"))
        return _records(rows, f"hub {HUB_REPO} ({config})")
    except Exception as exc:
        errors.append(f"datasets: {type(exc).__name__}: {str(exc)[:200]}")
    try:
        from huggingface_hub import hf_hub_download

        path = hf_hub_download(HUB_REPO, f"{config}.json", repo_type="dataset")
        return _records(json.loads(Path(path).read_text(encoding="utf-8")), f"hub {HUB_REPO}/{config}.json")
    except Exception as exc:
        errors.append(f"hf_hub_download: {type(exc).__name__}: {str(exc)[:200]}")
    raise TapirError(
        f"AlpacaEval instructions could not be loaded from the hub ({HUB_REPO}, config {config}); offline? "
        f"Download {config}.json from the dataset repository {HUB_REPO} on a machine with access and pass "
        f"-o data_path=/path/to/{config}.json (any JSON/JSONL list of objects with instruction and output works). "
        f"Errors: {' | '.join(errors)}"
    )


def load_instructions(data_path: str | Path | None = None, *, hub_config: str = DEFAULT_CONFIG,
                      limit: int | None = None, instruction_ids: Sequence[int] | None = None) -> InstructionSet:
    """The instruction set, or a subset of it: ``instruction_ids`` (positions
    in the set, as in the item ids ``alpaca-<index>``), then the first
    ``limit`` of those."""
    if data_path:
        items, source = load_file(data_path), f"data_path {data_path}"
        standard = False
        version = data_version(items, f"file:{Path(data_path).name}")
    else:
        items, source = load_hub(hub_config), f"hub {HUB_REPO} ({hub_config})"
        standard = len(items) == STANDARD_COUNT
        version = data_version(items, f"hub:{HUB_REPO}/{hub_config}")
    parts, total = [], len(items)
    if instruction_ids is not None:
        wanted = list(dict.fromkeys(int(i) for i in instruction_ids))
        bad = [i for i in wanted if not 0 <= i < len(items)]
        if bad:
            raise TapirError(f"instruction_ids {bad[:10]} are not in the set (indices 0..{len(items) - 1})")
        if len(wanted) < len(items):
            items = [items[i] for i in sorted(wanted)]
            parts.append("instruction_ids=" + ",".join(str(i) for i in sorted(wanted)))
    if limit is not None and limit < len(items):
        items = items[:limit]
        parts.append(f"limit={limit}")
    subset = f"{len(items)} of {total} ({'; '.join(parts)}) {digest(items)}" if parts else None
    return InstructionSet(items, source, standard and subset is None, version, subset, total)
