"""Rows are read and written only by tapir/store/: no SQL outside it.

Every .py under tapir/ and plugins/ (tapir/store/ left out) is parsed with
``ast``; the test fails naming file:line for any call of ``.execute``,
``.executemany`` or ``.executescript`` and for any string (f-strings
included, their placeholders read as ``{}``) that is an SQL statement: one
that starts, after whitespace, with SELECT/INSERT/UPDATE/DELETE/CREATE/
ALTER/PRAGMA/BEGIN (any case) in the shape of a statement (``select ...
from``, ``insert into``, ``update <t> set``, ``delete from``, ``create
table|index|view|trigger``, ``alter table``, ``pragma <name>``, a bare
``begin``/``commit``/``rollback``), so that help text such as "create the
repos private" or a docstring opening with "Delete what ..." is not SQL.
Docstrings are not read.

The sqlite-utils table API is the store's too: outside it the test flags
subscripting a store or database with a table name (``store["runs"]``,
``self.store["stages"]``, ``ctx.store.db["items"]``: a string subscript of a
name or attribute called ``store``, ``db`` or ending in ``_store``/``_db``)
and the attributes only sqlite-utils tables and databases have
(``rows_where``, ``count_where``, ``insert_all``, ``upsert_all``,
``delete_where``, ``columns_dict``, ``table_names``, ``create_table``, a
``.table(...)`` call, ...), called or not.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STORE = "tapir/store/"
CALLS = frozenset({"execute", "executemany", "executescript"})
# Attributes only a sqlite-utils Table or Database has (``insert``, ``update``,
# ``delete``, ``lookup`` are left out: dicts, lists and sets have them too;
# ``table[...]`` of a store is flagged as the subscript).
TABLE_API = frozenset({"rows_where", "count_where", "insert_all", "upsert_all", "delete_where", "columns_dict",
                       "table_names", "view_names", "create_table", "create_view", "add_column", "add_foreign_key",
                       "create_index", "enable_fts", "pks", "use_rowid"})
STORE_NAMES = ("store", "db", "database")
_STATEMENT = re.compile(
    r"""\s*(?:
        select\b.*\bfrom\b | select\s+[\d('?*] |
        insert\s+(?:or\s+\w+\s+)?into\b |
        update\s+(?:or\s+\w+\s+)?[\w{}"]+\s+set\b |
        delete\s+from\b |
        create\s+(?:unique\s+|temp\s+|temporary\s+|virtual\s+)?(?:table|index|view|trigger)\b |
        alter\s+table\b |
        pragma\s+\w+ |
        (?:begin|commit|rollback|end)(?:\s+(?:deferred|immediate|exclusive))?(?:\s+transaction)?\s*;?\s*$
    )""", re.I | re.S | re.X)


def is_sql(text: str) -> bool:
    return _STATEMENT.match(text) is not None


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def _text(node: ast.JoinedStr) -> str:
    return "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)


def _holder(node: ast.AST) -> str | None:
    """The name a subscripted expression ends in (``ctx.store`` -> ``store``)."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _is_store(node: ast.AST) -> bool:
    name = (_holder(node) or "").lower()
    return name in STORE_NAMES or name.endswith(("_store", "_db"))


def violations(source: str, name: str) -> list[str]:
    """``name:line what`` for each raw SQL use in ``source``."""
    tree = ast.parse(source, name)
    skip = _docstrings(tree)
    inside_fstrings = {id(v) for n in ast.walk(tree) if isinstance(n, ast.JoinedStr) for v in n.values}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in CALLS:
            found.append((node.lineno, f"call of .{node.func.attr}()"))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "table"
              and node.args and isinstance(node.args[0], (ast.Constant, ast.JoinedStr))):
            found.append((node.lineno, "call of .table()"))
        elif isinstance(node, ast.Attribute) and node.attr in TABLE_API:
            found.append((node.lineno, f"sqlite-utils .{node.attr}"))
        elif (isinstance(node, ast.Subscript) and _is_store(node.value)
              and isinstance(node.slice, (ast.Constant, ast.JoinedStr))
              and (not isinstance(node.slice, ast.Constant) or isinstance(node.slice.value, str))):
            found.append((node.lineno, f"table {ast.unparse(node)[:60]}"))
        elif isinstance(node, ast.JoinedStr) and is_sql(_text(node)):
            found.append((node.lineno, f"SQL f-string {_text(node)[:60]!r}"))
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip
              and id(node) not in inside_fstrings and is_sql(node.value)):
            found.append((node.lineno, f"SQL string {node.value.strip()[:60]!r}"))
    return [f"{name}:{line} {what}" for line, what in sorted(set(found))]


def sources() -> list[Path]:
    paths = [*(ROOT / "tapir").rglob("*.py"), *(ROOT / "plugins").rglob("*.py")]
    return sorted(p for p in paths if not p.relative_to(ROOT).as_posix().startswith(STORE))


def test_no_sql_outside_the_store():
    found = [v for p in sources() for v in violations(p.read_text(encoding="utf-8"), p.relative_to(ROOT).as_posix())]
    assert not found, ("raw SQL or sqlite-utils table use outside tapir/store/ (move it into a typed function of "
                       "the table's module there):\n"
                       + "\n".join(found))


def test_the_scan_finds_each_kind_of_sql():
    source = '''
"""Select rows from the table: a docstring, not SQL."""
HELP = "create the repos private"
DOC = "Delete what an evaluator stored"
A = "select id from runs where id = ?"
B = f"select {', '.join(cols)} from llm_calls"
C = "INSERT OR REPLACE INTO locks (name) values (?)"
D = f"update api_batches set {sets} where id = ?"
E = "  delete from benchmark_results where run_id = ?"
F = "create index ix on items (id)"
G = "alter table items add column x"
H = "PRAGMA foreign_keys = ON"
I = "BEGIN IMMEDIATE"
J = "select 1"
def f(conn):
    """Update the row: a docstring."""
    conn.execute(A)
    conn.executemany(C, [])
    conn.executescript(H)
'''
    found = violations(source, "m.py")
    lines = sorted(int(v.split(":")[1].split()[0]) for v in found)
    assert lines == [5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 17, 18, 19], found
    assert "m.py:17 call of .execute()" in found
    assert not is_sql("Select the runs to compare") and not is_sql("update the stage's info")


def test_the_scan_finds_each_use_of_the_table_api():
    source = '''
def f(store, ctx, self, cfg, rows, items):
    store["runs"].update(run_id, {"status": "done"})
    n = ctx.store["stages"].count_where("run_id = ?", [rid])
    table = self.store.db["items"]
    out = list(store.db[f"{name}_rows"].rows_where(order_by="id"))
    if "key" in store["stages"].columns_dict:
        pass
    names = self.store.db.table_names()
    results_db["benchmark_results"].insert_all(rows)
    store.db.table("llm_calls", pk="id")
    cfg["runs"].update(x=1)
    rows["items"].insert(0, 1)
    items.update({"a": 1}); items.insert(0, 2)
    self.lookup(keys)
    store[key]
'''
    found = violations(source, "m.py")
    lines = sorted({int(v.split(":")[1].split()[0]) for v in found})
    assert lines == [3, 4, 5, 6, 7, 9, 10, 11], found
    assert "m.py:3 table store['runs']" in found
    assert "m.py:4 sqlite-utils .count_where" in found
    assert "m.py:9 sqlite-utils .table_names" in found
    assert "m.py:11 call of .table()" in found
