"""Reading evaluator options that may arrive as strings (``tapir bench NAME
-o key=value``) or as Python values (configs, tests)."""

from __future__ import annotations

import json
from typing import Any

from tapir.errors import TapirError


def as_dict(name: str, value: Any) -> dict[str, Any]:
    """A dict option, given as a dict or a JSON object string."""
    if value is None or value == "":
        return {}
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = None
        if isinstance(parsed, dict):
            return parsed
    raise TapirError(f"option {name} must be a JSON object such as '{{\"api_base\": \"http://...\"}}', not {value!r}")


def as_int(name: str, value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise TapirError(f"option {name} must be an integer, not {value!r}") from None


def as_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise TapirError(f"option {name} must be true or false, not {value!r}")


def as_list(name: str, value: Any) -> list[str] | None:
    """A list option: a list, a JSON list, or a comma-separated string."""
    if value is None or value == "":
        return None
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                return [str(v) for v in json.loads(text)]
            except json.JSONDecodeError:
                pass
        return [part.strip() for part in text.split(",") if part.strip()]
    raise TapirError(f"option {name} must be a list or comma-separated names, not {value!r}")


def check_known(evaluator: str, options: dict[str, Any], known: dict[str, str]) -> None:
    unknown = sorted(set(options) - set(known))
    if unknown:
        listing = "; ".join(f"{k}: {v}" for k, v in known.items())
        raise TapirError(f"{evaluator}: unknown option(s) {', '.join(unknown)}. Options: {listing}")
