"""Reading instructions from files or Hugging Face datasets into Items.

Understood shapes (field names configurable with ``data.fields``):

* Alpaca: ``instruction``, ``input``, ``output``
* OpenAI chat: ``messages`` (``role``/``content`` turns: the first user turn
  is the instruction, the first assistant turn after it the answer, a system
  turn before it the item's system prompt)
* ShareGPT / OpenHermes-2.5: ``conversations`` (``from``/``value`` turns,
  ``human``/``gpt``/``system``; read the same way)
* optional ``id`` and ``task_type`` columns

A system prompt is kept in the item's ``meta["system"]`` and sent before the
instruction wherever the item is prompted (:attr:`tapir.roles.Item.messages`).

``data.limit: N`` reads the first N usable rows; ``data.sample: N`` draws a
seeded random subset of N (the config's ``seed``), stratified by task type
when the rows carry ``task_type`` labels.

Files: ``.jsonl``/``.ndjson`` (one JSON object a line), ``.json`` (a list of
objects, or ``{"data": [...]}``), ``.csv`` (a header row naming the columns;
read strictly: a broken quote is an error, never a row), ``.parquet``, and a
folder written by ``datasets``' ``save_to_disk``. Text must be UTF-8 (a BOM
is accepted).

Bad rows are reported with their line (or row) number and the reason;
``on_bad_row: skip`` drops them with a warning, ``error`` rejects the whole
file. A file whose every row is bad, or that cannot be read at all, is a
:class:`~tapir.errors.ConfigError` naming the file, the line and the fix.
Nothing is written to the store until the whole input has been read and
checked.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from tapir.errors import ConfigError
from tapir.roles import Item

DEFAULT_FIELDS = {
    "id": "id",
    "instruction": "instruction",
    "input": "input",
    "output": "output",
    "messages": "messages",
    "conversations": "conversations",
    "system": "system",
    "task_type": "task_type",
}

# ShareGPT speaker names (``from``) and the chat role each one plays.
SHAREGPT_ROLES = {
    "system": "system",
    "human": "user", "user": "user",
    "gpt": "assistant", "assistant": "assistant", "chatgpt": "assistant", "bard": "assistant",
    "bing": "assistant", "model": "assistant",
}

SHOWN_BAD_ROWS = 20
_DATASET_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")
_SUFFIXES = ".jsonl, .ndjson, .json, .csv or .parquet"


@dataclass
class LoadReport:
    items: list[Item] = field(default_factory=list)
    bad_rows: list[str] = field(default_factory=list)  # "SOURCE line N: why"
    duplicates: int = 0
    rows: int = 0  # rows read (good, bad and duplicate)
    sampled_from: int | None = None  # usable items before data.sample drew its subset


def item_id(instruction: str, input_text: str = "") -> str:
    """Content-hash id: the same instruction always gets the same id."""
    return "i-" + hashlib.sha256(f"{instruction}\x00{input_text}".encode()).hexdigest()[:12]


class _BadRow(ValueError):
    """One row is unusable; the message is the reason."""


# --------------------------------------------------------------------------- reading files


def _decoded_lines(path: Path) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of a UTF-8 file (BOM dropped), line ends kept;
    a byte that is not UTF-8 is a ConfigError naming the line."""
    with path.open("rb") as f:
        for n, raw in enumerate(f, 1):
            if n == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                yield n, raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ConfigError(
                    f"{path} line {n}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at column {exc.start + 1}). "
                    f"Save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8 {path.name} > fixed{path.suffix}`)"
                ) from None


def _read_text(path: Path) -> str:
    return "".join(text for _, text in _decoded_lines(path))


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, (int, float)):
        return f"a number ({value!r})"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, str):
        return "text"
    return type(value).__name__


_TOO_DEEP = "arrays or objects nested too deeply to read (a record is one object of text fields). Fix the file"


def _jsonl_rows(path: Path) -> Iterator[tuple[str, Any]]:
    for n, line in _decoded_lines(path):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            yield f"line {n}", _BadRow(f"not valid JSON ({exc.msg} at column {exc.colno})")
            continue
        except RecursionError:  # Python's parser gives up on arrays or objects nested a thousand deep
            yield f"line {n}", _BadRow(_TOO_DEEP)
            continue
        if not isinstance(row, dict):
            row = _BadRow(f"expected a JSON object {{...}}, got {_kind(row)}")
        yield f"line {n}", row


def _json_rows(path: Path) -> Iterator[tuple[str, Any]]:
    text = _read_text(path)
    try:
        data = json.loads(text)
    except RecursionError:
        raise ConfigError(f"{path}: not usable JSON: {_TOO_DEEP}") from None
    except json.JSONDecodeError as exc:
        hint = " (one JSON object per line? name the file .jsonl)" if exc.msg == "Extra data" else ""
        raise ConfigError(f"{path} line {exc.lineno}: not valid JSON: {exc.msg} at column {exc.colno}{hint}. "
                          f"Fix the file, or convert it to JSONL") from None
    if isinstance(data, list):
        # Parse the list again element by element, to know each record's line.
        decoder = json.JSONDecoder()
        i = text.index("[") + 1
        line = text.count("\n", 0, i) + 1
        for row in data:
            while text[i] in " \t\r\n,":
                if text[i] == "\n":
                    line += 1
                i += 1
            _, end = decoder.raw_decode(text, i)
            yield f"line {line}", (row if isinstance(row, dict) else
                                   _BadRow(f"expected a JSON object {{...}}, got {_kind(row)}"))
            line += text.count("\n", i, end)
            i = end
        return
    if isinstance(data, dict):
        records = next((data[k] for k in ("data", "rows") if isinstance(data.get(k), list)), None)
        if records is None:
            records = [data]
        for n, row in enumerate(records, 1):
            yield f"record {n}", (row if isinstance(row, dict) else
                                  _BadRow(f"expected a JSON object {{...}}, got {_kind(row)}"))
        return
    raise ConfigError(f"{path}: expected a JSON list of records [{{...}}, ...], got {_kind(data)}")


def _csv_rows(path: Path, names: dict[str, str]) -> Iterator[tuple[str, Any]]:
    lines = (text for _, text in _decoded_lines(path))
    reader = csv.reader(lines, strict=True)
    header: list[str] | None = None
    start = 1
    while True:
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise ConfigError(
                f"{path} line {start}: broken CSV quoting ({exc}): a quoted field opened here is never closed, "
                f"or text follows a closing quote. Close the quote, and write a quote inside a quoted field "
                f"as two (\"\")"
            ) from None
        first, start = start, reader.line_num + 1
        if not record:
            continue  # a blank line
        if header is None:
            header = [cell.strip() for cell in record]
            if names["instruction"] not in header and names["messages"] not in header:
                shown = ", ".join(repr(c) for c in header[:6]) + (", ..." if len(header) > 6 else "")
                raise ConfigError(
                    f"{path} line {first}: the header row names no '{names['instruction']}' column "
                    f"(it reads {shown}). The first line of a CSV file must name the columns, e.g. "
                    f"instruction,input,output; or map yours with data.fields: {{instruction: COLUMN}}"
                )
            twice = sorted({c for c in header if c and header.count(c) > 1})
            if twice:  # a row keeps the last column of a name: the other one's text would be lost
                raise ConfigError(
                    f"{path} line {first}: the header row names column(s) {', '.join(repr(c) for c in twice)} "
                    f"more than once; only the last would be read. Give each column its own name"
                )
            continue
        if len(record) > len(header):
            yield f"line {first}", _BadRow(f"{len(record)} fields, but the header names {len(header)} "
                                            f"(an unquoted comma? quote fields that contain commas)")
            continue
        yield f"line {first}", dict(zip(header, record))


def _parquet_rows(path: Path) -> Iterator[tuple[str, Any]]:
    try:
        import pyarrow.parquet as pq

        table = pq.read_table(path)
    except ImportError:
        raise ConfigError(f"{path}: reading parquet needs pyarrow (pip install pyarrow)") from None
    except Exception as exc:  # ArrowInvalid, OSError ...: a corrupt or truncated file
        raise ConfigError(f"{path}: not a readable parquet file ({type(exc).__name__}: {exc}). "
                          f"Write it again (e.g. with pandas.DataFrame.to_parquet), or use JSONL") from None
    for n, row in enumerate(table.to_pylist(), 1):
        yield f"row {n}", row


def _datasets_folder_rows(path: Path, split: str) -> Iterator[tuple[str, Any]]:
    try:
        import datasets

        ds = datasets.load_from_disk(str(path))
        if isinstance(ds, datasets.DatasetDict):
            if split not in ds:
                raise ConfigError(f"{path}: the saved dataset has no split '{split}' "
                                  f"(it has: {', '.join(ds)}). Set data.split")
            ds = ds[split]
    except ConfigError:
        raise
    except ImportError:
        raise ConfigError(f"{path}: a datasets folder needs the datasets package (pip install datasets)") from None
    except Exception as exc:
        raise ConfigError(f"{path}: not a readable datasets folder ({type(exc).__name__}: {exc}). "
                          f"Write it again with Dataset.save_to_disk, or export it to JSONL") from None
    for n, row in enumerate(ds, 1):
        yield f"row {n}", row


def _rows_from_file(path: Path, names: dict[str, str] | None = None, split: str = "train"
                    ) -> Iterator[tuple[str, Any]]:
    names = {**DEFAULT_FIELDS, **(names or {})}
    if path.is_dir():
        if any((path / marker).exists() for marker in _DATASET_MARKERS):
            return _datasets_folder_rows(path, split)
        inside = sorted(p.name for p in path.iterdir() if p.suffix.lower() in (".jsonl", ".json", ".csv", ".parquet"))
        hint = f" It holds {', '.join(inside[:3])}: point data.path at one of them." if inside else ""
        raise ConfigError(f"data.path: {path} is a folder, not a data file.{hint} Give a {_SUFFIXES} file, or a "
                          f"folder written by datasets' save_to_disk")
    if not path.is_file():
        raise ConfigError(f"data.path: {path} is not a regular file. Give a {_SUFFIXES} file")
    suffix = path.suffix.lower()
    if suffix == ".gz":
        raise ConfigError(f"data.path: {path}: compressed files are not read; decompress it first (gunzip)")
    readers = {".jsonl": _jsonl_rows, ".ndjson": _jsonl_rows, ".json": _json_rows, ".parquet": _parquet_rows}
    if suffix not in readers and suffix != ".csv":
        raise ConfigError(f"data.path: {path}: unknown file type '{path.suffix}'. Use {_SUFFIXES} "
                          f"(or a datasets folder)")
    try:
        if path.stat().st_size == 0:
            raise ConfigError(f"data.path: {path} is empty (0 bytes). Give a file with one instruction per row")
        with path.open("rb"):
            pass
    except PermissionError:
        raise ConfigError(f"data.path: {path} cannot be read (permission denied). Fix its permissions") from None
    if suffix == ".csv":
        return _csv_rows(path, names)
    return readers[suffix](path)


def _rows_from_hub(name: str, config: str | None, split: str) -> Iterator[tuple[str, Any]]:
    import datasets

    local = Path(name)
    try:
        if local.is_dir() and any((local / marker).exists() for marker in _DATASET_MARKERS):
            ds = datasets.load_from_disk(str(local))
            if isinstance(ds, datasets.DatasetDict):
                ds = ds[split]
        else:
            ds = datasets.load_dataset(name, config, split=split)
    except Exception as exc:  # offline, unknown id, missing split ...
        raise ConfigError(
            f"data.hf_dataset '{name}' (split {split}) could not be loaded: {exc}. "
            "Check the id and split, or download it once with network access (HF_HUB_OFFLINE unset)."
        ) from None
    for n, row in enumerate(ds, 1):
        yield f"row {n}", row


# --------------------------------------------------------------------------- rows -> items


def _text_problem(key: str, value: Any) -> str:
    if value is None:
        return f"'{key}' is null"
    if isinstance(value, str):
        return f"'{key}' is empty" if value == "" else f"'{key}' is only whitespace"
    return f"'{key}' is {_kind(value)}, not text"


def _first_exchange(turns: list[tuple[str, Any]], key: str, content_key: str
                    ) -> tuple[str, str | None, str | None]:
    """(instruction, answer, system) from ``(role, content)`` turns: the first
    user turn, the first assistant turn after it, a system turn before it."""
    instruction = answer = system = None
    for i, (role, content) in enumerate(turns):
        if role == "system" and instruction is None and system is None:
            if not isinstance(content, str):
                raise _BadRow(f"'{key}[{i}].{content_key}' (the system turn) is {_kind(content)}, not text")
            system = content.strip() or None
        elif role == "user" and instruction is None:
            if not isinstance(content, str) or not content.strip():
                raise _BadRow(_text_problem(f"{key}[{i}].{content_key}", content) + " (the first user turn)")
            instruction = content
        elif role == "assistant" and instruction is not None and answer is None:
            if not isinstance(content, str):
                raise _BadRow(f"'{key}[{i}].{content_key}' is {_kind(content)}, not text")
            answer = content
    if instruction is None:
        roles = ", ".join(dict.fromkeys(str(role) for role, _ in turns))
        raise _BadRow(f"'{key}' has no user turn (roles: {roles})")
    return instruction, answer, system


def _turns(value: Any, key: str, role_key: str, content_key: str, roles: dict[str, str] | None = None
           ) -> list[tuple[str, Any]]:
    shape = f"{{{role_key}, {content_key}}}"
    if not isinstance(value, list):
        raise _BadRow(f"'{key}' is {_kind(value)}, not a list of {shape} turns")
    if not value:
        raise _BadRow(f"'{key}' is an empty list")
    turns = []
    for i, m in enumerate(value):
        if not isinstance(m, dict):
            raise _BadRow(f"'{key}'[{i}] is {_kind(m)}, not a {shape} object")
        missing = [k for k in (role_key, content_key) if k not in m]
        if missing:
            raise _BadRow(f"'{key}'[{i}] has no {' or '.join(repr(k) for k in missing)}")
        role = m[role_key]
        if roles is not None:
            if str(role).lower() not in roles:
                known = ", ".join(sorted(roles))
                raise _BadRow(f"'{key}'[{i}] is from {role!r}, a speaker tapir does not know (known: {known})")
            role = roles[str(role).lower()]
        turns.append((role, m[content_key]))
    return turns


def _from_messages(messages: Any, key: str = "messages") -> tuple[str, str | None, str | None]:
    return _first_exchange(_turns(messages, key, "role", "content"), key, "content")


def _from_conversations(conversations: Any, key: str = "conversations") -> tuple[str, str | None, str | None]:
    return _first_exchange(_turns(conversations, key, "from", "value", SHAREGPT_ROLES), key, "value")


def _instruction_of(row: dict, names: dict[str, str]) -> tuple[str, Any, str | None]:
    """(instruction, answer, system prompt) of one row, whichever shape it has."""
    key, mkey, ckey = names["instruction"], names["messages"], names["conversations"]
    value = row.get(key)
    if isinstance(value, str) and value.strip():
        system = row.get(names["system"])
        return value, row.get(names["output"]), (system.strip() or None) if isinstance(system, str) else None
    if row.get(mkey) not in (None, ""):
        return _from_messages(row[mkey], mkey)
    if row.get(ckey) not in (None, ""):
        return _from_conversations(row[ckey], ckey)
    if key in row:
        raise _BadRow(_text_problem(key, value))
    found = ", ".join(repr(str(k)) for k in list(row)[:8]) or "none"
    mapped = " (data.fields maps the instruction to this name)" if key != DEFAULT_FIELDS["instruction"] else ""
    raise _BadRow(f"no '{key}' or '{mkey}' field{mapped}; fields: {found} (a ShareGPT '{ckey}' list also serves)")


def rows_to_items(rows: Iterable[tuple[Any, Any]], fields: dict[str, str], source: str,
                  limit: int | None = None) -> LoadReport:
    names = {**DEFAULT_FIELDS, **fields}
    report = LoadReport()
    seen: dict[str, tuple[str, tuple[str, str]]] = {}  # id -> (where first, its instruction and input)
    for where, row in rows:
        if limit is not None and len(report.items) >= limit:
            break
        report.rows += 1
        where = f"line {where}" if isinstance(where, int) else where
        try:
            if isinstance(row, Exception):
                raise _BadRow(str(row))
            if not isinstance(row, dict):
                raise _BadRow(f"expected a record (mapping of fields), got {_kind(row)}")
            instruction, answer, system = _instruction_of(row, names)
            input_text = row.get(names["input"])
            if input_text is None:
                input_text = ""
            if not isinstance(input_text, str):
                raise _BadRow(f"'{names['input']}' is {_kind(input_text)}, not text")
            if answer is not None and not isinstance(answer, str):
                raise _BadRow(f"'{names['output']}' is {_kind(answer)}, not text")
            task_type = row.get(names["task_type"]) or None
            if task_type is not None and not isinstance(task_type, str):
                raise _BadRow(f"'{names['task_type']}' is {_kind(task_type)}, not text")
            for name, text in ((names["instruction"], instruction), (names["input"], input_text),
                               (names["output"], answer)):
                if isinstance(text, str) and "\x00" in text:  # a binary or damaged file, not an instruction
                    raise _BadRow(f"'{name}' holds a NUL character (\\u0000): a binary or damaged file? "
                                  f"Remove it")
        except _BadRow as exc:
            report.bad_rows.append(f"{source} {where}: {exc}")
            continue
        instruction, input_text = instruction.strip(), input_text.strip()
        given_id = row.get(names["id"])
        if (given_id not in (None, "") and not isinstance(given_id, (str, int))) or isinstance(given_id, bool):
            report.bad_rows.append(f"{source} {where}: '{names['id']}' is {_kind(given_id)}, not text or a "
                                   f"whole number")
            continue
        iid = str(given_id if given_id not in (None, "") else item_id(instruction, input_text))
        if iid in seen:
            first_where, first_text = seen[iid]
            if first_text != (instruction, input_text):
                # An id given twice for two instructions: the second one was dropped as a duplicate.
                report.bad_rows.append(f"{source} {where}: '{names['id']}' {iid!r} is already the id of a "
                                       f"different instruction ({first_where}); give each row its own id")
                continue
            report.duplicates += 1
            continue
        seen[iid] = (where, (instruction, input_text))
        report.items.append(
            Item(iid, instruction, input_text, answer.strip() if answer else None, task_type,
                 {"system": system} if system else {})
        )
    return report


def sample_items(items: list[Item], n: int, seed: int) -> list[Item]:
    """A seeded random subset of ``n`` items, in their original order.

    When every item carries a task type the draw is stratified: each type
    gets its share of ``n`` (largest remainder), drawn within the type, so
    the subset keeps the data's task mix. ``n`` >= len(items) keeps all."""
    import random

    if n >= len(items):
        return list(items)
    rng = random.Random(f"data.sample:{seed}:{n}")
    if all(it.task_type for it in items):
        groups: dict[str, list[int]] = {}
        for i, it in enumerate(items):
            groups.setdefault(it.task_type, []).append(i)
        exact = {t: n * len(ix) / len(items) for t, ix in groups.items()}
        counts = {t: int(v) for t, v in exact.items()}
        by_remainder = sorted(groups, key=lambda t: (-(exact[t] - counts[t]), t))
        for t in by_remainder[: n - sum(counts.values())]:
            counts[t] += 1
        chosen = [i for t in sorted(groups) for i in rng.sample(groups[t], counts[t])]
    else:
        chosen = rng.sample(range(len(items)), n)
    return [items[i] for i in sorted(chosen)]


def _bad_row_lines(bad_rows: list[str]) -> str:
    shown = "\n  ".join(bad_rows[:SHOWN_BAD_ROWS])
    more = len(bad_rows) - SHOWN_BAD_ROWS
    return f"\n  {shown}" + (f"\n  ... and {more} more bad row(s)" if more > 0 else "")


def load_items(data_config, base_dir: Path, seed: int = 0) -> LoadReport:
    """Read all items per ``data_config`` (a :class:`tapir.config.DataConfig`);
    ``data_config.sample`` keeps a subset drawn with ``seed``.

    Raises :class:`ConfigError` when the input cannot be read, when no row
    is usable (each bad row with its line and reason, first 20 shown), or
    when any row is bad under ``on_bad_row: error``."""
    from tapir.config.paths import resolve_path

    if data_config.path:
        path = resolve_path(data_config.path, base_dir)
        if not path.exists():
            raise ConfigError(f"data.path: file not found: {path} (relative paths are read from {base_dir}). "
                              f"Fix data.path in the config")
        rows = _rows_from_file(path, data_config.fields, data_config.split)
        source = str(path)
    elif data_config.hf_dataset:
        rows = _rows_from_hub(data_config.hf_dataset, data_config.hf_config, data_config.split)
        source = data_config.hf_dataset
    else:
        raise ConfigError("data: give 'path' (a JSONL/JSON/CSV/parquet file) or 'hf_dataset'")
    report = rows_to_items(rows, data_config.fields, source, data_config.limit)
    if report.bad_rows and data_config.on_bad_row == "error":
        raise ConfigError(
            f"{source}: {len(report.bad_rows)} bad row(s); nothing was loaded "
            f"(fix them, or set data.on_bad_row: skip to drop them):{_bad_row_lines(report.bad_rows)}"
        )
    if not report.items:
        if report.bad_rows:
            every = "the only row is" if report.rows == 1 else f"all {len(report.bad_rows)} rows are"
            if report.duplicates:
                every = f"{len(report.bad_rows)} of {report.rows} rows are"
            raise ConfigError(
                f"{source}: no usable instructions: {every} bad. Fix the rows, or map your column names "
                f"with data.fields (e.g. data.fields: {{instruction: prompt}}):{_bad_row_lines(report.bad_rows)}"
            )
        raise ConfigError(f"{source}: no rows (the file holds only blank lines or an empty list). "
                          f"Give at least one instruction")
    if data_config.sample is not None:
        report.sampled_from = len(report.items)
        report.items = sample_items(report.items, data_config.sample, seed)
    return report
