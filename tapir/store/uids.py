"""Content-addressed ids of stored rows (no store import: migrations use them too)."""

from __future__ import annotations

import hashlib
import json


def item_uid(scope: str, item_id: str, instruction: str | None, input_text: str | None,
             output: str | None) -> str:
    """The content-addressed id of an item row: 16 hex digits of the SHA-256
    of its scope, id and text (``None`` and ``""`` are one input)."""
    text = json.dumps([scope, item_id, instruction or "", input_text or "", output or ""], ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
