"""The datasette metadata shipped with tapir: table, view and column
descriptions, default facets and sort orders for a tapir database.

    datasette tapir.db -m "$(tapir datasette-metadata)"

The file names its database ``tapir`` (datasette names a database after its
file's stem); :func:`metadata_for` renames it for another file name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

METADATA = Path(__file__).with_name("metadata.yaml")


def metadata_path() -> Path:
    return METADATA


def metadata_for(db_path: str | Path | None = None) -> dict[str, Any]:
    """The metadata as a dict, its database section keyed by ``db_path``'s stem."""
    import yaml

    data = yaml.safe_load(METADATA.read_text())
    name = Path(db_path).stem if db_path else "tapir"
    data["databases"] = {name: data["databases"]["tapir"]}
    return data
