"""Reading JSON Lines files with one clear error for a bad line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tapir.errors import TapirError


def read_jsonl(path: str | Path) -> list[tuple[int, Any]]:
    """``(line number, value)`` for every non-blank line of ``path``.

    A line that is not JSON raises :class:`TapirError` naming the file and
    line (callers that want to skip bad lines read the file themselves)."""
    rows = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rows.append((lineno, json.loads(line)))
            except json.JSONDecodeError as exc:
                raise TapirError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
            except RecursionError:  # Python's parser gives up a thousand levels deep
                raise TapirError(f"{path}:{lineno}: not usable JSON (nested too deeply to read)") from None
    return rows
