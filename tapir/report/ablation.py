"""The ablation table (Table 5): which runs are the settings of one
ablation, and their benchmark scores side by side."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from tapir.errors import TapirError
from tapir.report.benchmarks import _benchmark_entries
from tapir.report.pieces import Section, Table
from tapir.report.queries import _stages
from tapir.store.db import Store
from tapir.store.runs import run_status, runs_named_with_prefix


ABLATION_TAG = "/ablation:"
ABLATION_FILE = "ablation.json"


def ablation_runs(store: Store, run: dict[str, Any]) -> list[tuple[str, str]]:
    """The ablation this run belongs to, as (setting, run id) pairs, in order.

    Found, first match wins: a JSON file ``ablation.json`` in the run's
    ``output_dir`` or its parent (a list of ``{"setting", "run_id"}``, a
    ``{"runs": [...]}`` object or a ``{setting: run_id}`` mapping; see
    :func:`load_ablation`), else the runs named ``<name>/ablation:<setting>``
    where ``<name>`` is this run's name without its own ``/ablation:`` tag."""
    out_dir = (run.get("config") or {}).get("output_dir")
    if out_dir:
        for folder in (Path(out_dir), Path(out_dir).parent):
            path = folder / ABLATION_FILE
            if path.is_file():
                try:
                    pairs = load_ablation(path)
                except TapirError:
                    continue
                if any(rid == run["id"] for _, rid in pairs) or folder == Path(out_dir):
                    return pairs
    base = (run.get("name") or "").split(ABLATION_TAG)[0]
    if not base:
        return []
    found: dict[str, str] = {}
    for rid, name in runs_named_with_prefix(store, base + ABLATION_TAG):
        found[name[len(base) + len(ABLATION_TAG):]] = rid  # a later run of a setting replaces an earlier one
    return list(found.items())


def load_ablation(path: str | Path) -> list[tuple[str, str]]:
    """(setting, run id) pairs from an ablation JSON file."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:
        raise TapirError(f"cannot read the ablation file {path}: {exc}") from None
    if isinstance(data, dict) and isinstance(data.get("runs", data.get("settings")), list):
        data = data.get("runs", data.get("settings"))
    pairs: list[tuple[str, str]] = []
    if isinstance(data, dict):
        pairs = [(str(k), str(v)) for k, v in data.items() if isinstance(v, str)]
    elif isinstance(data, list):
        for entry in data:
            if isinstance(entry, dict) and entry.get("run_id") and entry.get("setting"):
                pairs.append((str(entry["setting"]), str(entry["run_id"])))
            elif isinstance(entry, (list, tuple)) and len(entry) == 2:
                pairs.append((str(entry[0]), str(entry[1])))
    if not pairs:
        raise TapirError(f"{path}: expected a list of {{\"setting\": ..., \"run_id\": ...}} or a "
                         f"{{setting: run_id}} mapping")
    return pairs


def ablation_table(store: Store, settings: Sequence[tuple[str, str]]) -> Table:
    """Table 5 for (setting, run id) pairs: per setting its run, status,
    rounds, training examples of its last round and the benchmark scores of
    its last checkpoint (every primary benchmark column stored for it)."""
    from tapir.bench import model_key
    from tapir.pipeline.variants import ablations, setting_training

    # A setting's result is its last checkpoint, unless the setting names
    # another (full-alpaca is S0 of its run).
    chosen = {v.label: v.final_stage[1] for v in ablations({}) if v.final_stage and v.final_stage[0] == "train"}
    base_rows = []
    finals: dict[str, str] = {}
    for setting, rid in settings:
        status = run_status(store, rid)
        if status is None:
            base_rows.append([setting, rid, "missing", "", "", "", ""])
            continue
        stages = _stages(store, rid)
        trains = sorted((s for s in stages if s["name"] == "train" and s["status"] == "done"),
                        key=lambda s: s["round"])
        if setting in chosen:
            trains = [s for s in trains if s["round"] == chosen[setting]]
        last = trains[-1] if trains else None
        path = (last or {}).get("info", {}).get("path")
        if path:
            finals[rid] = model_key(path)
        info = (last or {}).get("info", {})
        done = {s["round"]: s["info"] for s in stages if s["name"] == "train" and s["status"] == "done"}
        trained = setting_training(done, last["round"]) if last else {}
        base_rows.append([setting, rid, status, "" if last is None else last["round"], info.get("examples", ""),
                          info.get("hard_examples", ""),
                          *("" if trained.get(k) is None else trained[k] for k in ("examples", "steps", "tokens")),
                          path or ""])
    values: dict[str, dict[str, str]] = {}  # model -> column -> its latest run's value
    columns: list[str] = []
    table = None
    try:
        table = _benchmark_entries(store, finals.values())
    except TapirError:
        table = None
    if table is not None:
        for sec in table.sections:
            for col in sec.columns:
                name = f"{sec.benchmark}: {col}"
                columns.append(name)
                for e in sec.entries:
                    if e.run_id is not None and not e.is_base and e.scores.get(col) is not None:
                        values.setdefault(e.model, {})[name] = f"{e.scores[col]:.4g}"  # entries: oldest first
    rows = []
    for row in base_rows:
        model = finals.get(row[1])
        got = values.get(model, {}) if model else {}
        rows.append(row[:9] + [got.get(c, "") for c in columns] + [row[9]])
    note = None if columns else "no benchmark results for these runs' last checkpoints yet (tapir bench)"
    return Table("Ablation (Table 5)", ["setting", "run", "status", "round", "# train", "hard",
                                        "examples (setting)", "optimizer steps", "tokens", *columns,
                                        "last checkpoint"], rows, note=note)


def _ablation_section(store: Store, run: dict[str, Any], settings: Sequence[tuple[str, str]] | None) -> Section:
    section = Section("ablation", "Ablations (Table 5)",
                      intro="Each setting of the ablation is a run of a pipeline variant. Examples, optimizer "
                            "steps and tokens are the setting's own training: its curriculum rounds summed "
                            "(full-alpaca: S0); compare settings at equal steps with `tapir ablate --match-steps`. "
                            "Scores are those of "
                            "its last checkpoint (full-alpaca: S0), from the latest run of each benchmark.")
    pairs = list(settings) if settings is not None else ablation_runs(store, run)
    if not pairs:
        section.notes.append(f"this run is part of no ablation (no {ABLATION_FILE} in its output folder, no runs "
                             f"named '<name>{ABLATION_TAG}<setting>')")
        return section
    section.tables.append(ablation_table(store, pairs))
    return section
