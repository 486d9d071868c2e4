"""Data rows against the trainer's ``max_length``, before anything is paid.

The trainer drops an example whose prompt alone fills ``max_length`` tokens
(nothing left to learn); found only at training time, such a row has
already cost a teacher answer, and when every row is that long S0 fails.
:func:`fit_rows` finds them first: each prompt (system turn and user turn)
is counted with the student's own ``tokenizer.json`` (found by its
backend's ``tokenizer_file`` capability; read with the ``tokenizers``
library: no transformers, no model load) when one is on disk, else bounded
from below by its UTF-8 bytes / :data:`BYTES_PER_TOKEN`. Only rows whose
bytes could reach ``max_length`` are tokenised, so this is cheap at the
paper's sizes. The count leaves out the chat template's own tokens: a
lower bound, so a row reported here is dropped by the trainer for sure.

``data.on_bad_row: skip`` (the default) leaves those rows out as bad rows
(file and line named, printed at the start of the run); ``error`` refuses
the data. Every row too long is an error either way.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any


# A token covers at most this many UTF-8 bytes in the bound used without a
# tokenizer (English averages ~4.5; long whitespace or repeated runs can be more).
BYTES_PER_TOKEN = 8
SHOWN = 20


def fit_rows(config, loaded, base_dir: Path) -> tuple[Any, list[str]]:
    """``(report, problems)``: ``loaded`` (a LoadReport) without the rows
    whose prompt cannot fit the trainer's ``max_length`` (skip), or the
    problem that refuses them (error, or every row too long)."""
    max_length = trainer_max_length(config)
    if loaded is None or max_length is None or not loaded.items or config.student is None:
        return loaded, []
    texts = [[m["content"] for m in it.messages] for it in loaded.items]
    candidates = [i for i, parts in enumerate(texts)
                  if sum(len(p.encode("utf-8")) for p in parts) + 2 * len(parts) >= max_length]
    if not candidates:
        return loaded, []
    count, how = token_counter(config.student.model, config.student.options)
    too_long = {}
    for i in candidates:
        n = sum(count(p) for p in texts[i])
        if n >= max_length:
            too_long[i] = n
    if not too_long:
        return loaded, []
    places = row_places(config.data, base_dir, {loaded.items[i].id for i in too_long})
    source = _source(config.data, base_dir)
    lines = [f"{places.get(loaded.items[i].id, f'{source} item {loaded.items[i].id}')}: the prompt is "
             f"{'at least ~' if how != 'tokenizer' else ''}{n} tokens ({_HOW[how]}), at least "
             f"trainer.options.max_length ({max_length})" for i, n in too_long.items()]
    every = len(too_long) == len(loaded.items)
    if every or config.data.on_bad_row == "error":
        what = ("every row is too long to train on" if every
                else f"{len(too_long)} row(s) too long to train on; nothing was loaded")
        skip = "" if every else ", or set data.on_bad_row: skip to leave them out"
        shown = "\n  ".join(lines[:SHOWN]) + (f"\n  ... and {len(lines) - SHOWN} more" if len(lines) > SHOWN else "")
        return loaded, [
            f"{source}: {what}: a prompt this long leaves the trainer nothing to learn, so it would drop the "
            f"example after the teacher answered it. Raise trainer.options.max_length above "
            f"{max(too_long.values())} (the longest prompt), shorten or remove the rows{skip}:\n  {shown}"]
    kept = [it for i, it in enumerate(loaded.items) if i not in too_long]
    bad = [f"{line}: left out (data.on_bad_row: skip)" for line in lines]
    return dataclasses.replace(loaded, items=kept, bad_rows=[*loaded.bad_rows, *bad]), []


_HOW = {"tokenizer": "the student's tokenizer, without the chat template",
        "bytes": f"UTF-8 bytes / {BYTES_PER_TOKEN}: no tokenizer.json of the student was found on disk"}


def trainer_max_length(config) -> int | None:
    """The trainer's ``max_length`` capability with its validated options
    (tapir.roles.Bounded). None: the trainer has no such capability (no row
    is checked before the run), says no limit, or its options are wrong
    (reported elsewhere)."""
    from tapir.plugins import registry

    table = registry().by_role["trainers"]
    component = table.get(config.trainer.name)
    if component is None or "max_length" not in component.capabilities:
        return None
    try:
        options = component.options_model().model_validate(config.trainer.options)
    except Exception:  # noqa: BLE001 - preflight reports the options' problems
        return None
    value = component.capability("max_length")(options)
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None


def token_counter(model_id: str, options: dict[str, Any]):
    """``(count(text) -> tokens, how)``: the student's tokenizer.json when one
    is on disk (a local folder, or the hub cache), else a bytes bound."""
    path = tokenizer_file(model_id, options)
    if path is not None:
        try:
            from tokenizers import Tokenizer

            tokenizer = Tokenizer.from_file(str(path))
            return (lambda text: len(tokenizer.encode(text, add_special_tokens=False).ids)), "tokenizer"
        except Exception:  # noqa: BLE001 - no tokenizers library, or a file it cannot read: the bound
            pass
    return (lambda text: len(text.encode("utf-8")) // BYTES_PER_TOKEN), "bytes"


def tokenizer_file(model_id: str, options: dict[str, Any]) -> Path | None:
    """The student's ``tokenizer.json`` on disk: its backend's
    ``tokenizer_file`` capability (tapir.roles.Tokenized); None when the
    backend has none or finds none (the bytes bound is used)."""
    from tapir.capabilities import backend_capability

    found = backend_capability(model_id, options, "tokenizer_file")
    if found is None:
        return None
    spec, tokenizer_file_of = found
    path = tokenizer_file_of(spec.name, spec.options)
    return Path(path) if path else None


def _source(data, base_dir: Path) -> str:
    from tapir.config.paths import resolve_path

    return str(resolve_path(data.path, base_dir)) if data.path else str(data.hf_dataset)


def row_places(data, base_dir: Path, ids: set[str]) -> dict[str, str]:
    """``item id -> "FILE line N"`` for ``ids``, read again the way the data
    was loaded (only called when a row is too long)."""
    from tapir.config.paths import resolve_path
    from tapir.pipeline import data as data_mod

    source = _source(data, base_dir)
    try:
        if data.path:
            rows = data_mod._rows_from_file(resolve_path(data.path, base_dir), data.fields, data.split)
        else:
            rows = data_mod._rows_from_hub(data.hf_dataset, data.hf_config, data.split)
        places: dict[str, str] = {}
        for where, row in rows:
            one = data_mod.rows_to_items([(where, row)], data.fields, source)
            for it in one.items:
                if it.id in ids and it.id not in places:
                    places[it.id] = f"{source} " + (f"line {where}" if isinstance(where, int) else str(where))
            if len(places) == len(ids):
                break
        return places
    except Exception:  # noqa: BLE001 - the rows were read once already; a place is a courtesy
        return {}
