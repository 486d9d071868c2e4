"""What a stage's "ok" counts in the stage table and the progress line.

Most stages record one outcome per item (``outcomes``), and their ok count is
the items that ended ok. ``train`` and ``export`` record none (a round trains
on a whole set, export writes a whole file): they count the figure their info
holds instead, so no stage that did work shows "0 ok".
"""

from __future__ import annotations

from typing import Any

# stage -> (the info key it counts, what the table's note calls it)
COUNTED_BY_INFO = {"train": ("examples", "examples trained on"), "export": ("rows", "rows exported")}


def handled(name: str, ok: int, failed: int, info: dict[str, Any]) -> int:
    """The items stage ``name`` handled: its ok outcomes, or for a stage that
    records none (train, export) the count it stores in its info."""
    if name in COUNTED_BY_INFO and not ok and not failed:
        return int(info.get(COUNTED_BY_INFO[name][0]) or 0)
    return ok


def counted_note(names) -> str | None:
    """The stage table's note for the stages among ``names`` that count info figures."""
    present = set(names)
    notes = [f"{name}: {what}" for name, (_, what) in COUNTED_BY_INFO.items() if name in present]
    return f"ok counts items (for {'; '.join(notes)})" if notes else None
