"""Bad inputs a new user feeds tapir: data files, databases, duplicate YAML
keys and model ids. Each case runs ``tapir distill CONFIG`` (or the unit
under test) and asserts the exit code, that the message names the file /
key / line and says how to fix it, that no LLM call was made, that an
existing database is byte-for-byte unchanged and that no new file (no
database, no output folder) appears.

The base config is tests/pipeline_helpers.py's small one (script teacher,
spy trainer) over a stand-in student folder; each case changes one thing.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from pipeline_helpers import SEED_DATA, ScriptPlugin, ScriptTeacher, SpyPlugin, write_config

from tapir.config import DataConfig, read_yaml
from tapir.errors import ConfigError, TapirError
from tapir.pipeline.data import load_items
from tapir.store import open_store
from tapir.store import db as db_mod
from tapir.store.db import StoreError, StoreMissing, check_store, known_migrations

GOOD_ROW = json.dumps({"instruction": "Name a colour.", "output": "Blue."})


# --------------------------------------------------------------------------- harness


def snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` with the hash of its bytes."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.is_symlink():
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
        elif p.is_dir():
            out[str(p.relative_to(root)) + "/"] = "dir"
    return out


@pytest.fixture
def env(tmp_path, register_plugin, monkeypatch):
    """A work folder with a valid tapir database (one run row), a stand-in
    student folder, the test plugins, and the CLI."""
    from tapir.cli import _add_commands, cli

    register_plugin(ScriptPlugin(), "test-script")
    register_plugin(SpyPlugin(), "test-spy")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TAPIR_DB", raising=False)
    monkeypatch.setenv("TAPIR_QUIET", "1")
    _add_commands()
    student = tmp_path / "student"
    student.mkdir()
    (student / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (student / "model.safetensors").write_bytes(b"stand-in weights")  # preflight checks the weights are there
    existing = tmp_path / "existing.db"
    store = open_store(existing)
    store.execute("insert into runs (id, name, status) values ('r-old', 'old', 'done')")
    store.db.conn.commit()
    store.close()
    return Env(tmp_path, student, existing, cli)


class Env:
    def __init__(self, root: Path, student: Path, existing: Path, cli):
        self.root, self.student, self.existing, self.cli = root, student, existing, cli

    def config(self, **overrides) -> Path:
        return write_config(self.root, self.student, **overrides)

    def invoke(self, args: list[str], code: int = 2) -> str:
        """Run the CLI; assert exit code, a clean message, no call, nothing written."""
        before = snapshot(self.root)
        calls = ScriptTeacher.calls
        result = CliRunner().invoke(self.cli, args)
        assert result.exit_code == code, (result.output, result.exception)
        assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
        assert "Traceback" not in result.output
        assert ScriptTeacher.calls == calls, "an LLM call was made"
        assert snapshot(self.root) == before, "a file was created or changed"
        return result.output

    def distill(self, config: Path, db: Path | str | None = None, code: int = 2) -> str:
        return self.invoke(["--db", str(db or self.existing), "distill", str(config)], code=code)


def data_file(root: Path, name: str, content: bytes | str) -> Path:
    path = root / name
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    return path


def jsonl(*rows) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)


# --------------------------------------------------------------------------- data files through `tapir distill`

# (case id, file name, content, fragments the message must hold; "{f}" is the file's path)
DATA_CASES = [
    ("not-json", "d.jsonl", "not json\n{x\n",
     ["{f}: no usable instructions: all 2 rows are bad", "{f} line 1: not valid JSON", "{f} line 2: not valid JSON"]),
    ("missing-instruction", "d.jsonl", jsonl({"output": "a"}, {"prompt": "b"}),
     ["{f} line 1: no 'instruction' or 'messages' field; fields: 'output'", "{f} line 2:", "data.fields"]),
    ("empty-instruction", "d.jsonl", jsonl({"instruction": ""}), ["{f} line 1: 'instruction' is empty",
                                                                  "the only row is bad"]),
    ("whitespace-instruction", "d.jsonl", jsonl({"instruction": "  \t "}),
     ["{f} line 1: 'instruction' is only whitespace"]),
    ("null-instruction", "d.jsonl", jsonl({"instruction": None}), ["{f} line 1: 'instruction' is null"]),
    ("number-instruction", "d.jsonl", jsonl({"instruction": 5}),
     ["{f} line 1: 'instruction' is a number (5), not text"]),
    ("list-instruction", "d.jsonl", jsonl({"instruction": ["a"]}), ["{f} line 1: 'instruction' is a list, not text"]),
    ("bool-instruction", "d.jsonl", jsonl({"instruction": True}),
     ["{f} line 1: 'instruction' is a boolean (true), not text"]),
    ("output-not-text", "d.jsonl", jsonl({"instruction": "a", "output": {"x": 1}}),
     ["{f} line 1: 'output' is an object, not text"]),
    ("input-not-text", "d.jsonl", jsonl({"instruction": "a", "input": 3}),
     ["{f} line 1: 'input' is a number (3), not text"]),
    ("messages-not-list", "d.jsonl", jsonl({"messages": "hi"}),
     ["{f} line 1: 'messages' is text, not a list of {role, content} turns"]),
    ("messages-empty", "d.jsonl", jsonl({"messages": []}), ["{f} line 1: 'messages' is an empty list"]),
    ("messages-no-user", "d.jsonl", jsonl({"messages": [{"role": "system", "content": "s"},
                                                        {"role": "assistant", "content": "a"}]}),
     ["{f} line 1: 'messages' has no user turn (roles: system, assistant)"]),
    ("messages-turn-not-object", "d.jsonl", jsonl({"messages": ["hi"]}),
     ["{f} line 1: 'messages'[0] is text, not a {role, content} object"]),
    ("messages-turn-no-content", "d.jsonl", jsonl({"messages": [{"role": "user"}]}),
     ["{f} line 1: 'messages'[0] has no 'content'"]),
    ("messages-user-not-text", "d.jsonl", jsonl({"messages": [{"role": "user", "content": 7}]}),
     ["{f} line 1: 'messages[0].content' is a number (7), not text (the first user turn)"]),
    ("jsonl-row-is-list", "d.jsonl", "\n\n[1, 2]\n", ["{f} line 3: expected a JSON object {...}, got a list"]),
    ("every-row-bad-many", "d.jsonl", jsonl(*[{"instruction": ""}] * 25),
     ["all 25 rows are bad", "{f} line 20: 'instruction' is empty", "... and 5 more bad row(s)"]),
    ("on-bad-row-error", "d.jsonl", jsonl(GOOD_ROW, {"instruction": None}, GOOD_ROW),
     ["{f}: 1 bad row(s); nothing was loaded", "data.on_bad_row: skip", "{f} line 2: 'instruction' is null"]),
    ("csv-no-header", "d.csv", "Explain gravity,An answer\nName a colour,Blue\n",
     ["{f} line 1: the header row names no 'instruction' column", "'Explain gravity'",
      "must name the columns, e.g. instruction,input,output"]),
    ("csv-unterminated-quote", "d.csv", 'instruction,output\n"unterminated,quote\n',
     ["{f} line 2: broken CSV quoting", "never closed"]),
    ("csv-text-after-quote", "d.csv", 'instruction,output\n"a"b,c\n', ["{f} line 2: broken CSV quoting"]),
    ("csv-quote-after-multiline", "d.csv", 'instruction,output\n"two\nlines",ok\n"open,x\n',
     ["{f} line 4: broken CSV quoting"]),
    ("csv-too-many-fields", "d.csv", "instruction,output\na,b,c\n",
     ["{f} line 2: 3 fields, but the header names 2", "quote fields that contain commas"]),
    ("csv-empty-instruction", "d.csv", "instruction,output\n,b\n  ,c\n",
     ["{f} line 2: 'instruction' is empty", "{f} line 3: 'instruction' is only whitespace"]),
    ("json-invalid", "d.json", '[\n  {"instruction": "a"},\n  {"instruction": }\n]\n',
     ["{f} line 3: not valid JSON", "Fix the file"]),
    ("json-jsonl-content", "d.json", jsonl(GOOD_ROW, GOOD_ROW), ["{f} line 2: not valid JSON: Extra data",
                                                                "name the file .jsonl"]),
    ("json-not-a-list", "d.json", '"just text"', ["{f}: expected a JSON list of records", "got text"]),
    ("json-rows-not-objects", "d.json", '[\n  1,\n  "x"\n]', ["{f} line 2: expected a JSON object",
                                                             "{f} line 3: expected a JSON object"]),
    ("json-bad-record-line", "d.json", '[\n {"instruction": "ok"},\n\n {"instruction": null}\n]',
     ["{f} line 4: 'instruction' is null"]),
    ("json-empty-list", "d.json", "[]", ["{f}: no rows", "Give at least one instruction"]),
    ("non-utf8-jsonl", "d.jsonl", b'{"instruction": "ok"}\n{"instruction": "caf\xe9"}\n',
     ["{f} line 2: not UTF-8 text (byte 0xe9", "Save the file as UTF-8", "iconv"]),
    ("non-utf8-csv", "d.csv", b"instruction\nna\xefve\n", ["{f} line 2: not UTF-8 text"]),
    ("utf16-file", "d.jsonl", GOOD_ROW.encode("utf-16"), ["{f} line 1: not UTF-8 text"]),
    ("corrupt-parquet", "d.parquet", b"PAR1 this is not really parquet",
     ["{f}: not a readable parquet file", "Write it again"]),
    ("empty-file", "d.jsonl", b"", ["data.path: {f} is empty (0 bytes)"]),
    ("blank-lines-only", "d.jsonl", "\n \n\n", ["{f}: no rows"]),
    ("unknown-suffix", "d.txt", "hello\n", ["data.path: {f}: unknown file type '.txt'", ".jsonl"]),
    ("gzip", "d.jsonl.gz", b"\x1f\x8b\x08\x00", ["data.path: {f}: compressed files are not read", "gunzip"]),
    # a CSV row keeps the last of two columns of one name: the other's text was lost without a word
    ("csv-column-twice", "d.csv", "instruction,output,instruction\na,b,c\n",
     ["{f} line 1: the header row names column(s) 'instruction' more than once; only the last would be read"]),
    # an id given for two different instructions: the second was dropped as a "duplicate"
    ("id-twice", "d.jsonl", jsonl({"id": "x", "instruction": "A?"}, {"id": "x", "instruction": "B?"}),
     ["{f}: 1 bad row(s); nothing was loaded",
      "{f} line 2: 'id' 'x' is already the id of a different instruction (line 1); give each row its own id"]),
    ("id-not-text", "d.jsonl", jsonl({"id": {"a": 1}, "instruction": "a"}),
     ["{f} line 1: 'id' is an object, not text or a whole number"]),
    # Python's JSON parser raised RecursionError (exit 1, "Error: RecursionError: ...")
    ("jsonl-nested-too-deep", "d.jsonl", "[" * 100000 + "]" * 100000 + "\n",
     ["{f} line 1: arrays or objects nested too deeply to read (a record is one object of text fields)"]),
    ("json-nested-too-deep", "d.json", "[" * 100000 + "]" * 100000,
     ["{f}: not usable JSON: arrays or objects nested too deeply to read"]),
    ("nul-in-instruction", "d.jsonl", jsonl({"instruction": "a\u0000b"}),
     ["{f} line 1: 'instruction' holds a NUL character (\\u0000): a binary or damaged file? Remove it"]),
]


@pytest.mark.parametrize("name,filename,content,fragments", DATA_CASES, ids=[c[0] for c in DATA_CASES])
def test_bad_data_file(env, name, filename, content, fragments):
    f = data_file(env.root, filename, content)
    on_bad_row = "error" if name in ("on-bad-row-error", "json-bad-record-line", "id-twice") else "skip"
    out = env.distill(env.config(data={"path": str(f), "limit": 16, "on_bad_row": on_bad_row}))
    for fragment in fragments:
        assert fragment.replace("{f}", str(f)) in out, (fragment, out)


def test_parquet_without_instruction_column(env):
    import pyarrow as pa
    import pyarrow.parquet as pq

    f = env.root / "d.parquet"
    pq.write_table(pa.Table.from_pylist([{"prompt": "a"}, {"prompt": None}]), f)
    out = env.distill(env.config(data={"path": str(f)}))
    assert f"{f} row 1: no 'instruction' or 'messages' field; fields: 'prompt'" in out
    assert f"{f} row 2:" in out


def test_mapped_field_missing_says_data_fields(env):
    f = data_file(env.root, "d.jsonl", jsonl(GOOD_ROW))
    out = env.distill(env.config(data={"path": str(f), "fields": {"instruction": "question"}}))
    assert f"{f} line 1: no 'question' or 'messages' field (data.fields maps the instruction to this name)" in out


def test_folder_as_data_path(env):
    folder = env.root / "datadir"
    folder.mkdir()
    (folder / "train.jsonl").write_text(jsonl(GOOD_ROW))
    out = env.distill(env.config(data={"path": str(folder)}))
    assert f"data.path: {folder} is a folder, not a data file" in out
    assert "train.jsonl: point data.path at one of them" in out


def test_missing_data_file(env):
    out = env.distill(env.config(data={"path": str(env.root / "nope.jsonl")}))
    assert "data.path" in out and "nope.jsonl" in out and "not found" in out


# --------------------------------------------------------------------------- data files that load


def test_bom_is_accepted_in_jsonl_csv_and_json(tmp_path):
    for name, text in (("a.jsonl", jsonl(GOOD_ROW)), ("a.csv", "instruction,output\nName a colour.,Blue.\n"),
                       ("a.json", f"[{GOOD_ROW}]")):
        f = data_file(tmp_path, name, b"\xef\xbb\xbf" + text.encode())
        report = load_items(DataConfig(path=str(f)), tmp_path)
        assert [(i.instruction, i.output) for i in report.items] == [("Name a colour.", "Blue.")], name


def test_csv_multiline_field_keeps_line_numbers(tmp_path):
    f = data_file(tmp_path, "d.csv", 'instruction,output\r\n"Two\r\nlines",x\r\n,y\r\nok,z\r\n')
    report = load_items(DataConfig(path=str(f)), tmp_path)
    assert [i.instruction for i in report.items] == ["Two\r\nlines", "ok"]
    assert report.bad_rows == [f"{f} line 4: 'instruction' is empty"]
    assert report.rows == 3


def test_some_bad_rows_are_skipped_with_their_lines(tmp_path):
    f = data_file(tmp_path, "d.jsonl", jsonl(GOOD_ROW, {"instruction": 1}, "{oops", {"instruction": "B"}))
    report = load_items(DataConfig(path=str(f)), tmp_path)
    assert [i.instruction for i in report.items] == ["Name a colour.", "B"]
    assert [b.split(": ", 1)[0] for b in report.bad_rows] == [f"{f} line 2", f"{f} line 3"]


def test_datasets_folder_as_data_path(tmp_path):
    datasets = pytest.importorskip("datasets")
    folder = tmp_path / "saved"
    datasets.Dataset.from_list([{"instruction": "A"}, {"instruction": ""}]).save_to_disk(str(folder))
    report = load_items(DataConfig(path=str(folder)), tmp_path)
    assert [i.instruction for i in report.items] == ["A"]
    assert report.bad_rows == [f"{folder} row 2: 'instruction' is empty"]


def test_data_errors_are_config_errors(tmp_path):
    f = data_file(tmp_path, "d.csv", 'instruction\n"open\n')
    with pytest.raises(ConfigError) as exc:
        load_items(DataConfig(path=str(f)), tmp_path)
    assert exc.value.exit_code == 2


# --------------------------------------------------------------------------- databases through `tapir distill`


def _good_data(env) -> Path:
    return env.config(data={"path": str(SEED_DATA), "limit": 16})


def _sqlite_with(path: Path, *sql: str) -> Path:
    conn = sqlite3.connect(path)
    for statement in sql:
        conn.execute(statement)
    conn.commit()
    conn.close()
    return path


def _malformed(env) -> Path:
    data = bytearray(env.existing.read_bytes())
    data[100:4096 * 3] = b"\x13" * (4096 * 3 - 100)
    path = env.root / "broken.db"
    path.write_bytes(data)
    return path


def _newer(env) -> Path:
    path = env.root / "newer.db"
    path.write_bytes(env.existing.read_bytes())
    return _sqlite_with(path, "insert into _migrations (name, applied_at) values ('m999_from_the_future', 'x')")


DB_CASES = [
    ("folder", lambda env: (env.root / "dbdir").mkdir() or env.root / "dbdir",
     ["--db {p} is a folder, not a database file", "Give a file path, e.g. {p}/tapir.db"]),
    ("not-sqlite", lambda env: data_file(env.root, "notes.db", "these are my notes\n" * 20),
     ["{p} is not an SQLite database", "Point --db at a tapir database, or at a new file name"]),
    ("malformed", _malformed, ["database {p} is damaged (database disk image is malformed)", ".recover"]),
    ("someone-elses", lambda env: _sqlite_with(env.root / "other.db", "create table runs (x)",
                                                "insert into runs values (1)"),
     ["{p} is an SQLite database but not tapir's: it has tables (runs) and no _migrations table",
      "Pass --db with a new file name"]),
    ("newer-schema", _newer,
     ["database {p} has schema version", "m999_from_the_future come from a newer tapir",
      f"knows schema version {len(known_migrations())} ({known_migrations()[-1]})", "Upgrade tapir"]),
    ("unwritable-folder", lambda env: Path("/proc/tapir-test.db"),
     ["cannot create database /proc/tapir-test.db: folder /proc is not writable", "writable folder"]),
    ("parent-is-a-file", lambda env: env.existing / "x.db",
     ["cannot create database {p}", "existing.db"]),
]


@pytest.mark.parametrize("name,make,fragments", DB_CASES, ids=[c[0] for c in DB_CASES])
def test_bad_database(env, name, make, fragments):
    path = make(env)
    config = _good_data(env)
    out = env.distill(config, db=path)
    for fragment in fragments:
        assert fragment.replace("{p}", str(path)) in out, (fragment, out)
    # check_store (preflight) finds the same problem, and creates nothing either.
    before = snapshot(env.root)
    problems = check_store(path)
    assert len(problems) == 1 and fragments[0].replace("{p}", str(path)).split(":")[0] in problems[0]
    assert snapshot(env.root) == before


def test_locked_by_another_program(env, monkeypatch):
    monkeypatch.setattr(db_mod, "BUSY_TIMEOUT_S", 0.3)
    config = _good_data(env)
    holder = sqlite3.connect(env.existing)
    holder.execute("BEGIN IMMEDIATE")
    try:
        out = env.distill(config)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert f"database {env.existing} is locked by another program" in out
    assert "Close the program that holds it" in out


def test_locked_by_a_tapir_process_names_it(env, monkeypatch):
    from tapir.locks import HOST

    monkeypatch.setattr(db_mod, "BUSY_TIMEOUT_S", 0.3)
    _sqlite_with(env.existing, "insert into locks (name, pid, host, acquired_at, heartbeat_at) values "
                 f"('run:r-busy', {os.getpid()}, '{HOST}', '2026-12-01T10:00:00Z', {10**10})")
    config = _good_data(env)
    holder = sqlite3.connect(env.existing)
    holder.execute("BEGIN IMMEDIATE")
    try:
        out = env.distill(config)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert f"locked by another tapir process (run:r-busy by pid {os.getpid()} on {HOST}" in out
    assert "pass --wait" in out


def test_read_only_command_on_a_bad_database_is_clean(env):
    notes = data_file(env.root, "notes.db", "plain text\n" * 50)
    out = env.invoke(["--db", str(notes), "runs"], code=2)
    assert f"{notes} is not an SQLite database" in out


def test_open_for_reading_never_creates(tmp_path):
    missing = tmp_path / "sub" / "none.db"
    for kwargs in ({"create": False}, {"readonly": True}):
        with pytest.raises(StoreMissing, match=f"no database at {missing}"):
            open_store(missing, **kwargs)
    assert list(tmp_path.iterdir()) == []
    assert check_store(missing, must_exist=True) == [f"no database at {missing} (pass --db PATH or set TAPIR_DB)"]
    assert check_store(missing) == []  # would be created: the folder is writable
    assert list(tmp_path.iterdir()) == []


def test_readonly_store_reads_and_refuses_writes(tmp_path):
    path = tmp_path / "r.db"
    open_store(path).close()
    before = snapshot(tmp_path)
    store = open_store(path, readonly=True)
    try:
        assert store.readonly and store.execute("select count(*) from runs").fetchone() == (0,)
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            store.execute("insert into runs (id) values ('x')")
    finally:
        store.close()
    assert snapshot(tmp_path) == before


def test_store_errors_are_config_errors_and_leave_no_empty_file(tmp_path):
    with pytest.raises(StoreError) as exc:
        open_store("/proc/none.db")
    assert exc.value.exit_code == 2 and isinstance(exc.value, ConfigError)
    assert not Path("/proc/none.db").exists()


def test_check_store_on_a_good_database_changes_nothing(env):
    before = snapshot(env.root)
    assert check_store(env.existing) == []
    assert check_store(env.root / "new.db") == []
    assert snapshot(env.root) == before


# --------------------------------------------------------------------------- duplicate YAML keys


def _dup_config(env, extra: str) -> tuple[Path, list[str]]:
    path = env.config(data={"path": str(SEED_DATA), "limit": 16})
    text = path.read_text() + extra
    path.write_text(text)
    return path, text.splitlines()


def _line_of(lines: list[str], text: str, nth: int = 0) -> int:
    return [i for i, line in enumerate(lines, 1) if line.startswith(text)][nth]


def test_duplicate_top_level_section(env):
    path, lines = _dup_config(env, "curriculum:\n  rounds: 1\n")
    out = env.distill(path)
    first, again = _line_of(lines, "curriculum:"), _line_of(lines, "curriculum:", 1)
    assert f"{path} line {again}: duplicate key 'curriculum' (first given at line {first})" in out
    assert "Merge the two into one" in out


def test_duplicate_nested_key(env):
    path, lines = _dup_config(env, "")
    at = _line_of(lines, "  limit:")
    lines.insert(at, "  limit: 3")
    path.write_text("\n".join(lines) + "\n")
    out = env.distill(path)
    assert f"{path} line {at + 1}: duplicate key 'data.limit' (first given at line {at})" in out


def test_duplicate_keys_in_a_list_item_and_in_flow_style_all_reported(tmp_path):
    path = data_file(tmp_path, "c.yaml", "a:\n  - x: 1\n    x: 2\nb: {k: 1, k: 2}\n")
    with pytest.raises(ConfigError) as exc:
        read_yaml(path)
    assert str(exc.value).splitlines() == [
        f"{path} line 3: duplicate key 'a[0].x' (first given at line 2); YAML would keep only the last one, "
        "silently. Merge the two into one",
        f"{path} line 4: duplicate key 'b.k' (first given at line 4); YAML would keep only the last one, "
        "silently. Merge the two into one",
    ]


def test_merge_keys_may_be_overridden(tmp_path):
    path = data_file(tmp_path, "c.yaml", "base: &b\n  x: 1\n  y: 2\nteacher:\n  <<: *b\n  x: 3\n")
    assert read_yaml(path) == {"base": {"x": 1, "y": 2}, "teacher": {"x": 3, "y": 2}}


def test_config_with_a_bom_reads(tmp_path):
    path = data_file(tmp_path, "c.yaml", b"\xef\xbb\xbfname: x\n")
    assert read_yaml(path) == {"name": "x"}


# --------------------------------------------------------------------------- model ids


def test_prompt_with_a_hub_id_says_did_you_mean_hf(env):
    out = env.invoke(["prompt", "hi", "-m", "HuggingFaceTB/SmolLM2-135M-Instruct"], code=1)
    assert "did you mean hf:HuggingFaceTB/SmolLM2-135M-Instruct?" in out
    assert "'HuggingFaceTB' is not a litellm provider" in out
    assert "docs/models.md" in out


@pytest.mark.parametrize("role", ["student", "teacher"])
def test_hub_id_in_a_config_role_says_did_you_mean_hf(env, role):
    model = "meta-llama/Llama-2-7b-hf"
    if role == "student":
        path = env.config(student={"model": model})
    else:
        path = env.config(teacher={"name": "default", "model": {"model": model}})
    out = env.distill(path)
    assert f"{path}: '{role}.model': unknown model '{model}': did you mean hf:{model}?" in out


def test_folder_without_config_json_is_named(env, monkeypatch):
    folder = env.root / "ckpt" / "adapter"
    folder.mkdir(parents=True)
    path = env.config(student={"model": "ckpt/adapter"})
    out = env.distill(path)
    assert "the folder ckpt/adapter holds no config.json, so it is not a transformers model" in out


def test_model_id_rule(pm):
    from tapir.models import error_hint, hub_org, resolve

    assert (resolve("openai/gpt-4o-mini").backend, resolve("ollama/llama3:8b").backend) == ("litellm", "litellm")
    assert resolve("hosted_vllm/Qwen2.5-7B-Instruct").backend == "litellm"
    assert (resolve("hf:org/name").backend, resolve("hf:org/name").name) == ("hf", "org/name")
    with pytest.raises(TapirError, match=r"did you mean hf:Qwen/Qwen2.5-7B-Instruct\?"):
        resolve("Qwen/Qwen2.5-7B-Instruct")
    assert [hub_org(m) for m in ("org/name", "./a/b", "/a/b", "a/b/c", "hf:a/b", "gpt-4o")] == [
        "org", None, None, None, None, None]
    hint = error_hint("org/name", "BadRequestError: LLM Provider NOT provided. Pass in the LLM provider")
    assert "did you mean hf:org/name?" in hint
    assert error_hint("org/name", "RateLimitError") == "" and error_hint("openai/x", None) == ""


def test_static_provider_list_matches_installed_litellm():
    pytest.importorskip("litellm")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins"))
    import litellm
    from tapir_litellm import providers

    installed = {str(getattr(p, "value", p)) for p in litellm.provider_list}
    missing = installed - providers.PROVIDERS
    assert not missing, f"regenerate plugins/tapir_litellm/providers.py: litellm {litellm.__name__} adds {missing}"
    assert providers.providers() == frozenset(installed)  # litellm imported: its own list
    assert {"openai", "anthropic", "hosted_vllm", "ollama"} <= providers.PROVIDERS
    assert not {"meta-llama", "HuggingFaceTB", "Qwen"} & providers.PROVIDERS


def test_a_lock_conflict_sqlite_reports_at_once_is_asked_again(tmp_path, monkeypatch):
    """Two processes opening a new database together can get "database is
    locked" back without SQLite's busy wait; open_store asks again within
    its busy timeout instead of failing the run."""
    real = db_mod._connect_for_writing
    calls = []

    def flaky(path):
        calls.append(path)
        if len(calls) < 3:
            raise sqlite3.OperationalError("database is locked")
        return real(path)

    monkeypatch.setattr(db_mod, "_connect_for_writing", flaky)
    store = db_mod.open_store(tmp_path / "t.db")
    assert len(calls) == 3 and "runs" in store.db.table_names()
    store.db.conn.close()

    def broken(path):
        calls.append(path)
        raise sqlite3.OperationalError("disk I/O error")

    calls.clear()
    monkeypatch.setattr(db_mod, "_connect_for_writing", broken)
    with pytest.raises(db_mod.StoreError):
        db_mod.open_store(tmp_path / "u.db")
    assert len(calls) == 1  # not a lock conflict: no second try


# --------------------------------------------------------------------------- options and models, checked in preflight

API = {"api_key_env": "TAPIR_TEST_KEY"}


def _api_teacher(options: dict) -> dict:
    return {"name": "default", "model": {"model": "openai/gpt-4o-mini", "options": {**API, **options}}}


def _good(env, **overrides) -> Path:
    return env.config(data={"path": str(SEED_DATA), "limit": 16}, **overrides)


def _distill_both(env, config: Path, extra: list[str] | None = None) -> str:
    """Run against the existing database (left byte-for-byte unchanged) and
    against a new path (no file created); both exit 2 with the same message."""
    mtime = env.existing.stat().st_mtime_ns
    out = env.invoke(["--db", str(env.existing), "distill", str(config), *(extra or [])])
    assert env.existing.stat().st_mtime_ns == mtime
    fresh = env.root / "fresh.db"
    again = env.invoke(["--db", str(fresh), "distill", str(config), *(extra or [])])
    assert not fresh.exists() and not (env.root / "out").exists()
    assert out.splitlines()[-1] == again.splitlines()[-1]
    return out


@pytest.fixture
def key(monkeypatch):
    monkeypatch.setenv("TAPIR_TEST_KEY", "test-key")


def test_backend_option_typo_is_found_before_anything_is_written(env, key):
    path = _good(env, teacher=_api_teacher({"concurency": 4}))
    out = _distill_both(env, path)
    assert (f"{path}: 'teacher.model.options': unknown option 'concurency'. Did you mean 'concurrency'? "
            "Allowed: adaptive_concurrency, api_base, api_bases, api_key_env,") in out


def test_sampling_parameter_among_backend_options_points_to_generation(env, key):
    path = _good(env, teacher=_api_teacher({"temprature": 0.2}))
    out = _distill_both(env, path)
    assert (f"{path}: 'teacher.model.options': 'temprature' is not an option of the litellm backend: sampling "
            "parameters go under teacher.model.generation (e.g. teacher.model.generation.temperature)") in out


def test_backend_option_out_of_range(env, key):
    path = _good(env, judge={"name": "pairwise", "model": {"model": "openai/gpt-4o-mini",
                                                           "options": {**API, "concurrency": 0}}})
    out = _distill_both(env, path)
    assert (f"{path}: 'judge.model.options': option 'concurrency': Input should be greater than or equal to 1 "
            "(got 0)") in out


def test_api_key_in_the_config_is_refused_and_never_echoed(env, key):
    secret = "sk-proj-DO-NOT-PRINT-1234567890"
    path = _good(env, rewriter={"name": "task-aware", "model": {"model": "openai/gpt-4o-mini",
                                                                "options": {"api_key": secret}}})
    out = _distill_both(env, path)
    assert (f"{path}: 'rewriter.model.options': 'api_key' holds a credential: keys never go into a config "
            "(it is stored with the run). Remove it and export the key as an environment variable instead with "
            "api_key_env naming the variable (e.g. api_key_env: MY_KEY)") in out
    assert secret not in out


def test_classifier_backend_options_are_checked(env, key):
    path = _good(env, classifier={"name": "llm", "model": {"model": "openai/gpt-4o-mini",
                                                           "options": {**API, "timeout": -1}}})
    out = _distill_both(env, path)
    assert f"{path}: 'classifier.model.options': option 'timeout': Input should be greater than 0 (got -1)" in out


def test_student_option_typo_set_on_the_command_line_fails_the_dry_run(env):
    path = _good(env)
    out = _distill_both(env, path, ["--dry-run", "--set", "student.options.batch_sise=4"])
    assert (f"{path}: 'student.options': unknown option 'batch_sise'. Did you mean 'batch_size'? "
            "Allowed: batch_size, chat_template, device, dtype,") in out
    assert "dry run" not in out  # no plan printed


def test_student_serve_options_are_checked(env):
    path = _good(env, student={"model": f"hf:{env.student}",
                               "serve": {"model": "openai/student", "options": {"api_base": "http://127.0.0.1:9/v1",
                                                                                "concurrency": "many"}}})
    out = _distill_both(env, path)
    assert (f"{path}: 'student.serve.options': option 'concurrency': Input should be a valid integer, unable to "
            "parse string as an integer (got 'many')") in out


@pytest.mark.parametrize("judge", ["preference", "pairwise", "mtbench-single"])
def test_judge_params_typo_is_found_before_any_call(env, judge):
    options = {"params": {"temprature": 0.5}}
    if judge == "mtbench-single":
        options["judge_mode"] = "robust"
    path = _good(env, judge={"name": judge, "model": {"model": "script:judge"}, "options": options})
    out = _distill_both(env, path)
    assert (f"{path}: 'judge.options': unknown option 'params.temprature'. Did you mean 'temperature'? "
            "Allowed: max_new_tokens, seed, stop, temperature, top_logprobs, top_p") in out


def test_judge_params_wrong_type_names_the_value(env):
    path = _good(env, judge={"name": "preference", "model": {"model": "script:judge"},
                             "options": {"params": {"max_new_tokens": "many"}}})
    out = _distill_both(env, path)
    assert (f"{path}: 'judge.options': option 'params.max_new_tokens': Input should be a valid integer, unable "
            "to parse string as an integer (got 'many')") in out


def test_classifier_params_typo(env):
    path = _good(env, classifier={"name": "llm", "model": {"model": "script:classifier"},
                                  "options": {"params": {"max_new_token": 8}}})
    out = _distill_both(env, path)
    assert (f"{path}: 'classifier.options': unknown option 'params.max_new_token'. Did you mean "
            "'max_new_tokens'?") in out


def test_failure_rate_for_an_unknown_stage(env):
    path = _good(env, failures={"max_failure_rate": {"teacher_answer": 0.1}})
    out = _distill_both(env, path)
    assert (f"{path}: 'failures.max_failure_rate': Value error, unknown stage 'teacher_answer'. Did you mean "
            "'teacher_answers'? Stages: benchmarks,") in out


@pytest.mark.parametrize("role", ["student", "teacher"])
def test_missing_local_model_folder(env, role):
    model = "hf:/nonexistent/folder"
    if role == "student":
        path = _good(env, student={"model": model})
    else:
        path = _good(env, teacher={"name": "default", "model": {"model": model}})
    out = _distill_both(env, path)
    assert (f"{path}: '{role}.model': no folder /nonexistent/folder: '{model}' names a local model folder "
            "that does not exist. Fix the path (a folder with config.json and the weights), or write "
            "hf:ORG/NAME for a hub model") in out


def _folder(env, name: str, files: dict[str, str | bytes]) -> Path:
    folder = env.root / name
    folder.mkdir()
    for file, content in files.items():
        (folder / file).write_bytes(content.encode() if isinstance(content, str) else content)
    return folder


def test_model_folder_without_weights(env):
    folder = _folder(env, "noweights", {"config.json": "{}", "tokenizer.json": "{}"})
    out = _distill_both(env, _good(env, student={"model": f"hf:{folder}"}))
    assert (f"'student.model': {folder} has config.json but no weights: none of model.safetensors, "
            "pytorch_model.bin (or a sharded model's index) is there.") in out


def test_model_folder_with_a_missing_shard(env):
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    folder = _folder(env, "sharded", {"config.json": "{}", "model.safetensors.index.json": json.dumps(index),
                                      "model-00001-of-00002.safetensors": b"x"})
    out = _distill_both(env, _good(env, student={"model": str(folder)}))
    assert (f"'student.model': {folder} is missing weight file model-00002-of-00002.safetensors (listed in "
            "model.safetensors.index.json); copy the missing shard(s) into the folder") in out


def test_model_folder_with_a_broken_config(env):
    folder = _folder(env, "broken", {"config.json": "{not json", "model.safetensors": b"x"})
    out = _distill_both(env, _good(env, judge={"name": "pairwise", "model": {"model": f"hf:{folder}"}}))
    assert f"'judge.model': {folder / 'config.json'} is not readable JSON (" in out


# --------------------------------------------------------------------------- rows against the trainer's max_length


def _word_tokenizer(folder: Path) -> None:
    """A tokenizer.json that makes one token of each word (exact counts)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({"[UNK]": 0, "a": 1}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.save(str(folder / "tokenizer.json"))


def test_row_longer_than_max_length_under_on_bad_row_error(env):
    _word_tokenizer(env.student)
    long_row = {"instruction": "Summarise: " + "a " * 120}
    f = data_file(env.root, "d.jsonl", jsonl(GOOD_ROW, GOOD_ROW.replace("colour", "color"), long_row))
    path = env.config(data={"path": str(f), "on_bad_row": "error"})
    out = _distill_both(env, path)
    assert (f"{f}: 1 row(s) too long to train on; nothing was loaded: a prompt this long leaves the trainer "
            "nothing to learn, so it would drop the example after the teacher answered it. Raise "
            "trainer.options.max_length above 121 (the longest prompt), shorten or remove the rows, or set "
            "data.on_bad_row: skip to leave them out:") in out
    assert (f"{f} line 3: the prompt is 121 tokens (the student's tokenizer, without the chat template), at "
            "least trainer.options.max_length (96)") in out


def test_every_row_too_long_is_an_error_even_under_skip(env):
    rows = [{"instruction": f"Row {i}: " + "x" * 900} for i in range(2)]
    f = data_file(env.root, "d.jsonl", jsonl(*rows))
    out = _distill_both(env, env.config(data={"path": str(f)}))
    assert f"{f}: every row is too long to train on: a prompt this long" in out
    assert "or set data.on_bad_row" not in out  # skipping would leave nothing
    assert (f"{f} line 2: the prompt is at least ~113 tokens (UTF-8 bytes / 8: no tokenizer.json of the student "
            "was found on disk), at least trainer.options.max_length (96)") in out


def test_rows_too_long_are_left_out_under_skip_before_any_call(env):
    from tapir.pipeline.preflight import check

    _word_tokenizer(env.student)
    near = {"instruction": "Count: " + "a " * 90}  # 91 tokens: fits
    f = data_file(env.root, "d.jsonl", jsonl(GOOD_ROW, near, {"instruction": "Say: " + "a " * 96}))
    checked = check(env.config(data={"path": str(f)}), str(env.existing))
    assert [it.instruction[:6] for it in checked.loaded.items] == ["Name a", "Count:"]
    assert checked.loaded.bad_rows == [
        f"{f} line 3: the prompt is 97 tokens (the student's tokenizer, without the chat template), at least "
        "trainer.options.max_length (96): left out (data.on_bad_row: skip)"]
    # Raising max_length keeps the row.
    base = yaml.safe_load(env.config(data={"path": str(f)}).read_text())
    base["trainer"]["options"]["max_length"] = 98
    wider = env.root / "wider.yaml"
    wider.write_text(yaml.safe_dump(base))
    assert len(check(wider, str(env.existing)).loaded.items) == 3


# --------------------------------------------------------------------------- files read late, checked first


def test_missing_heldout_file_is_found_before_any_call(env):
    """evaluation.heldout.path is read by heldout_answers, after S0 is paid
    for: a missing file is a preflight problem, like data.path."""
    out = env.distill(env.config(evaluation={"heldout": {"path": "nosuch-heldout.jsonl"}}))
    assert "'evaluation.heldout.path': file not found: nosuch-heldout.jsonl" in out
    assert "Fix evaluation.heldout.path" in out


def test_heldout_file_that_is_not_valid_is_found_before_any_call(env):
    f = data_file(env.root, "heldout.jsonl", "not json\n")
    out = env.distill(env.config(evaluation={"heldout": {"path": str(f)}}))
    assert "'evaluation.heldout.path'" in out and f"{f} line 1: not valid JSON" in out


def test_heldout_skip_past_every_row(env):
    f = data_file(env.root, "heldout.jsonl", jsonl({"instruction": "Name a colour."}, {"instruction": "Name a fruit."}))
    out = env.distill(env.config(evaluation={"heldout": {"path": str(f), "skip": 5}}))
    assert f"'evaluation.heldout.path': {f} has 2 usable row(s), and evaluation.heldout.skip: 5 skips them all" in out


@pytest.mark.parametrize("command", ["distill", "study"])
def test_student_and_students_together_are_refused_by_a_study(env, command):
    """A config with 'students' runs as a study, whose runs each replace
    'students' with one 'student': the config's own 'student' was dropped
    without a word and the study ran."""
    config = env.config(students=[f"hf:{env.student}"])
    out = env.invoke(["--db", str(env.existing), command, str(config)])
    assert (f"{config}: Value error, give either 'student' (one model) or 'students' (a list of models), "
            f"not both or none") in out


def test_output_dir_where_no_folder_can_be_made(env):
    """os.access says yes to root in /proc: the run wrote the database and
    then failed on the folder (exit 1, FileNotFoundError)."""
    out = env.distill(env.config(output_dir="/proc/tapir-out", data={"path": str(SEED_DATA), "limit": 16}))
    assert "'output_dir': /proc is not writable; choose another output_dir" in out


def test_dry_run_on_an_existing_database_leaves_no_file_beside_it(env):
    """The dry run reads the database for what it would reuse: its mode=ro
    connection, never closed, left existing.db-wal and existing.db-shm."""
    out = env.invoke(["--db", str(env.existing), "distill", str(_good_data(env)), "--dry-run"], code=0)
    assert "teacher_answers" in out
    assert sorted(p.name for p in env.root.iterdir() if p.name.startswith("existing.db")) == ["existing.db"]


LABEL_CASES = [
    ("folder", None, "labelled file not found: {f}"),
    ("empty", "", "{f}: no labelled instructions"),
    ("no-task-type", jsonl({"instruction": "a"}), "{f}:1: missing 'task_type'"),
    ("not-json", "hello\n", "{f}:1: not valid JSON"),
    ("nested-too-deep", "[" * 100000 + "]" * 100000 + "\n", "{f}:1: not usable JSON (nested too deeply to read)"),
    ("unknown-task-type", jsonl({"instruction": "a", "task_type": "Cooking"}),
     "{f}:1: unknown task type 'Cooking'. Allowed: "),
]


@pytest.mark.parametrize("name,content,fragment", LABEL_CASES, ids=[c[0] for c in LABEL_CASES])
def test_bad_classifier_labels_file_is_found_before_any_call(env, name, content, fragment):
    """The centroid classifier reads labels_path in the classify stage,
    after the teacher's answers and S0 are paid for: a folder, an empty
    file or a bad row there was found only then."""
    if content is None:
        f = env.root / "labels"
        f.mkdir()
    else:
        f = data_file(env.root, "labels.jsonl", content)
    config = env.config(data={"path": str(SEED_DATA), "limit": 16},
                        classifier={"name": "centroid", "options": {"labels_path": str(f)}})
    out = env.distill(config)
    assert f"{config}: 'classifier.options': " in out
    assert fragment.replace("{f}", str(f)) in out, out
    assert "Fix the file (JSONL rows with instruction, input, task_type), or point labels_path at another" in out


SERVE_CASES = [
    ("unknown-backend", {"model": "nosuch:{checkpoint}"}, "'student.serve.model': unknown model 'nosuch:/checkpoint'"),
    ("placeholder-typo", {"model": "openai/student", "options": {"api_base": "http://127.0.0.1:9/v1"},
                          "launch": "vllm serve {chekpoint} --port {port}"},
     "'student.serve.launch': 'chekpoint' is not a placeholder tapir fills (only {checkpoint}, {port} and {replica})"),
    ("unclosed-quote", {"model": "openai/student", "options": {"api_base": "http://127.0.0.1:9/v1"},
                        "launch": "vllm serve '{checkpoint}"},
     "'student.serve.launch': not a command line (No closing quotation); close the quote"),
]


@pytest.mark.parametrize("name,serve,fragment", SERVE_CASES, ids=[c[0] for c in SERVE_CASES])
def test_student_serve_mistakes_are_found_before_any_call(env, key, name, serve, fragment):
    """student.serve is used when the first checkpoint answers, after the
    teacher's answers and S0 are paid for: an unknown backend or a
    placeholder the serving code does not fill failed the run there."""
    student = {"model": f"hf:{env.student}", "serve": serve}
    out = env.distill(env.config(data={"path": str(SEED_DATA), "limit": 16}, student=student))
    assert fragment in out, out


def test_an_id_given_again_for_the_same_instruction_is_a_duplicate(tmp_path):
    f = data_file(tmp_path, "d.jsonl", jsonl({"id": "x", "instruction": "A?"}, {"id": "x", "instruction": "A?"},
                                            {"id": 7, "instruction": "B?"}))
    report = load_items(DataConfig(path=str(f), on_bad_row="error"), tmp_path)
    assert [(i.id, i.instruction) for i in report.items] == [("x", "A?"), ("7", "B?")]
    assert report.duplicates == 1 and report.bad_rows == []


def test_ablate_names_the_config_file_in_its_messages(env):
    """ablate checks each setting as a dict: its messages began 'config:'
    and named neither the file nor the setting."""
    config = env.config(data={"path": str(SEED_DATA), "limit": 16}, curriculm={})
    out = env.invoke(["--db", str(env.existing), "ablate", str(config)])
    assert out.startswith(f"Error: {config}: unknown key 'curriculm'. Did you mean 'curriculum'?"), out
    config = env.config(data={"path": str(SEED_DATA), "limit": 16}, judge={"name": "nosuch-judge"})
    out = env.invoke(["--db", str(env.existing), "ablate", str(config)])
    assert out.startswith(f"Error: {config}, ablation setting full-alpaca:\nconfig: 'judge.name': unknown judge "
                          f"'nosuch-judge'"), out


def test_classifier_output_folder_that_is_a_file(env):
    """The encoder classifier trains into model_dir in the classify stage,
    after the teacher and S0 are paid for: a file there failed the run."""
    f = data_file(env.root, "model.txt", "not a folder")
    config = env.config(data={"path": str(SEED_DATA), "limit": 16},
                        classifier={"name": "encoder", "options": {"model_dir": str(f)}})
    out = env.distill(config)
    assert f"{config}: 'classifier.options.model_dir': {f} is a file, not a folder" in out


@pytest.mark.parametrize("device", ["gpu0", "cuda:x", "CUDA"])
def test_student_device_that_torch_does_not_know(env, device):
    """The student's device is used when it is first loaded, after the
    teacher's answers are paid for: torch refused 'gpu0' there."""
    student = {"model": f"hf:{env.student}", "options": {"device": device}}
    out = env.distill(env.config(data={"path": str(SEED_DATA), "limit": 16}, student=student))
    assert ("'student.options': option 'device': Value error, not a torch device: write auto, cpu, cuda, cuda:N "
            f"(N a GPU index) or mps (got '{device}')") in out, out


def test_the_same_student_twice_in_a_study(env):
    """Two identical students ran the same study row twice (labels
    student-1 and student-2), training the same backbone again."""
    config = env.config(data={"path": str(SEED_DATA), "limit": 16}, student=None,
                        students=[f"hf:{env.student}", {"model": f"hf:{env.student}"}])
    out = env.invoke(["--db", str(env.existing), "study", str(config)])
    assert f"'students[1]' is the same as 'students[0]' ('hf:{env.student}', the same options): each student once" \
        in out


@pytest.mark.parametrize("role, section", [
    ("judge", {"name": "reference-similarity", "options": {"method": "rouge"}, "model": {"model": "script:judge"}}),
    ("judge", {"name": "student-loss", "model": {"model": "script:judge"}}),
    ("classifier", {"name": "centroid", "options": {"labels_path": str(SEED_DATA)}, "model": {"model": "script:c"}}),
])
def test_a_model_given_to_a_component_that_calls_none(env, role, section):
    """A judge or classifier that calls no model was built without the
    model given to it: the model the user meant to judge with was ignored
    without a word (student-loss scores with the student)."""
    config = env.config(data={"path": str(SEED_DATA), "limit": 16}, **{role: section})
    out = env.distill(config)
    assert (f"{config}: '{role}.model': {role} '{section['name']}' calls no model, so {role}.model "
            f"({section['model']['model']}) would be ignored. Remove {role}.model") in out, out


@pytest.mark.parametrize("command", [["report", "r-old"], ["study-report", "old"]])
def test_report_output_that_is_the_database(env, command):
    """`tapir report RUN -o tapir.db` wrote the HTML over the database the
    report was read from (exit 0): every run, call and result was gone."""
    out = env.invoke(["--db", str(env.existing), *command, "-o", str(env.existing)])
    assert (f"-o {env.existing} is the database the report is read from ({env.existing.resolve()}); writing the "
            f"HTML there would replace it") in out


def test_option_values_and_ablation_files_nested_too_deeply(env):
    """-o KEY=VALUE and --ablation's JSON raised RecursionError past their
    own error handling ('Error: RecursionError', exit 1)."""
    from tapir.cli.options import parse_options

    deep = "[" * 100000 + "]" * 100000
    assert parse_options([f"tasks={deep}"]) == {"tasks": deep}  # kept as text, then refused by the option's type
    f = data_file(env.root, "ablation.json", deep)
    out = env.invoke(["--db", str(env.existing), "report", "r-old", "--ablation", str(f)], code=1)
    assert f"cannot read the ablation file {f}: maximum recursion depth exceeded" in out
