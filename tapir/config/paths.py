"""Where a config's relative paths are read from."""

from __future__ import annotations

from pathlib import Path


def config_base(source: str | Path | dict) -> Path:
    """The folder relative paths in a config are read from: the YAML file's
    folder, or the working directory for a config given as a dict."""
    return Path.cwd() if isinstance(source, dict) else Path(source).resolve().parent


def resolve_path(value: str, base: Path) -> Path:
    p = Path(value).expanduser()
    if p.is_absolute() or p.exists():
        return p
    return base / p
