"""Drawing figures: matplotlib, imported only when a figure is drawn, and PNG bytes."""

from __future__ import annotations

import io


def _matplotlib():
    """The Figure class, or None without matplotlib (no pyplot: no global state)."""
    try:
        from matplotlib.figure import Figure as MplFigure
    except ImportError:
        return None
    return MplFigure


NO_MATPLOTLIB = "no figure: matplotlib is not installed (pip install 'tapir[local]'); the numbers are in the table"


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def _short(text: str, width: int = 48) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
