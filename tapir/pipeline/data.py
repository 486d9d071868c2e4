"""Reading instructions from files or Hugging Face datasets into Items.

Understood shapes (field names configurable with ``data.fields``):

* Alpaca: ``instruction``, ``input``, ``output``
* chat: ``messages`` (the first user turn is the instruction, the first
  assistant turn after it the answer)
* optional ``id`` and ``task_type`` columns

Bad rows are reported with their line (or row) number; ``on_bad_row: skip``
drops them with a warning, ``error`` rejects the whole file. Nothing is
written to the store until the whole input has been read and checked.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from tapir.errors import TapirError
from tapir.roles import Item

DEFAULT_FIELDS = {
    "id": "id",
    "instruction": "instruction",
    "input": "input",
    "output": "output",
    "messages": "messages",
    "task_type": "task_type",
}


@dataclass
class LoadReport:
    items: list[Item] = field(default_factory=list)
    bad_rows: list[str] = field(default_factory=list)  # "line N: why"
    duplicates: int = 0


def item_id(instruction: str, input_text: str = "") -> str:
    """Content-hash id: the same instruction always gets the same id."""
    return "i-" + hashlib.sha256(f"{instruction}\x00{input_text}".encode()).hexdigest()[:12]


def _rows_from_file(path: Path) -> Iterator[tuple[int, Any]]:
    suffix = "".join(path.suffixes[-2:]) if path.suffix == ".gz" else path.suffix
    suffix = suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        with path.open(encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    yield n, json.loads(line)
                except json.JSONDecodeError as exc:
                    yield n, ValueError(f"not valid JSON ({exc.msg})")
    elif suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise TapirError(f"{path}: not valid JSON at line {exc.lineno}: {exc.msg}") from None
        if isinstance(data, dict):
            data = data.get("data") or data.get("rows") or [data]
        if not isinstance(data, list):
            raise TapirError(f"{path}: expected a JSON list of records")
        for n, row in enumerate(data, 1):
            yield n, row
    elif suffix == ".csv":
        with path.open(encoding="utf-8", newline="") as f:
            for n, row in enumerate(csv.DictReader(f), 2):  # line 1 is the header
                yield n, row
    elif suffix == ".parquet":
        import pyarrow.parquet as pq

        for n, row in enumerate(pq.read_table(path).to_pylist(), 1):
            yield n, row
    else:
        raise TapirError(f"{path}: unknown file type '{path.suffix}'. Use .jsonl, .json, .csv or .parquet")


def _rows_from_hub(name: str, config: str | None, split: str) -> Iterator[tuple[int, Any]]:
    import datasets

    local = Path(name)
    try:
        saved = ("dataset_info.json", "state.json", "dataset_dict.json")
        if local.is_dir() and any((local / marker).exists() for marker in saved):
            ds = datasets.load_from_disk(str(local))
            if isinstance(ds, datasets.DatasetDict):
                ds = ds[split]
        else:
            ds = datasets.load_dataset(name, config, split=split)
    except Exception as exc:  # offline, unknown id, missing split ...
        raise TapirError(
            f"data.hf_dataset '{name}' (split {split}) could not be loaded: {exc}. "
            "Check the id and split, or download it once with network access (HF_HUB_OFFLINE unset)."
        ) from None
    for n, row in enumerate(ds, 1):
        yield n, row


def _from_messages(messages: Any) -> tuple[str, str | None]:
    if not isinstance(messages, list) or not messages:
        raise ValueError("'messages' must be a non-empty list of {role, content}")
    instruction = answer = None
    for m in messages:
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise ValueError("each message needs 'role' and 'content'")
        if m["role"] == "user" and instruction is None:
            instruction = m["content"]
        elif m["role"] == "assistant" and instruction is not None and answer is None:
            answer = m["content"]
    if not instruction:
        raise ValueError("'messages' has no user turn")
    return instruction, answer


def rows_to_items(rows: Iterable[tuple[int, Any]], fields: dict[str, str], source: str,
                  limit: int | None = None) -> LoadReport:
    names = {**DEFAULT_FIELDS, **fields}
    report = LoadReport()
    seen: set[str] = set()
    for n, row in rows:
        if limit is not None and len(report.items) >= limit:
            break
        try:
            if isinstance(row, Exception):
                raise row
            if not isinstance(row, dict):
                raise ValueError("expected a record (mapping of fields)")
            if row.get(names["instruction"]) not in (None, ""):
                instruction = row[names["instruction"]]
                answer = row.get(names["output"])
            elif row.get(names["messages"]) is not None:
                instruction, answer = _from_messages(row[names["messages"]])
            else:
                raise ValueError(f"no '{names['instruction']}' or '{names['messages']}' field")
            if not isinstance(instruction, str) or not instruction.strip():
                raise ValueError("the instruction is empty or not text")
            input_text = row.get(names["input"]) or ""
            if not isinstance(input_text, str):
                raise ValueError(f"'{names['input']}' is not text")
            if answer is not None and not isinstance(answer, str):
                raise ValueError(f"'{names['output']}' is not text")
            task_type = row.get(names["task_type"]) or None
        except ValueError as exc:
            report.bad_rows.append(f"{source} line {n}: {exc}")
            continue
        iid = str(row.get(names["id"]) or item_id(instruction.strip(), input_text.strip()))
        if iid in seen:
            report.duplicates += 1
            continue
        seen.add(iid)
        report.items.append(
            Item(iid, instruction.strip(), input_text.strip(), answer.strip() if answer else None, task_type)
        )
    return report


def load_items(data_config, base_dir: Path) -> LoadReport:
    """Read all items per ``data_config`` (a :class:`tapir.config.DataConfig`)."""
    from tapir.config import resolve_path

    if data_config.path:
        path = resolve_path(data_config.path, base_dir)
        if not path.exists():
            raise TapirError(f"data.path: file not found: {path}")
        rows = _rows_from_file(path)
        source = str(path)
    else:
        rows = _rows_from_hub(data_config.hf_dataset, data_config.hf_config, data_config.split)
        source = data_config.hf_dataset
    report = rows_to_items(rows, data_config.fields, source, data_config.limit)
    if report.bad_rows and data_config.on_bad_row == "error":
        shown = "\n  ".join(report.bad_rows[:20])
        more = f"\n  ... and {len(report.bad_rows) - 20} more" if len(report.bad_rows) > 20 else ""
        raise TapirError(
            f"{len(report.bad_rows)} bad row(s) in {source}; nothing was loaded "
            f"(set data.on_bad_row: skip to drop them):\n  {shown}{more}"
        )
    if not report.items:
        raise TapirError(f"no usable instructions in {source}")
    return report
