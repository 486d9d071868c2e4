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
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STORE = "tapir/store/"
CALLS = frozenset({"execute", "executemany", "executescript"})
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


def violations(source: str, name: str) -> list[str]:
    """``name:line what`` for each raw SQL use in ``source``."""
    tree = ast.parse(source, name)
    skip = _docstrings(tree)
    inside_fstrings = {id(v) for n in ast.walk(tree) if isinstance(n, ast.JoinedStr) for v in n.values}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in CALLS:
            found.append((node.lineno, f"call of .{node.func.attr}()"))
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
    assert not found, ("raw SQL outside tapir/store/ (move it into a typed function of the table's module there):\n"
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
