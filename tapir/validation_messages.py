"""Pydantic's validation errors as one line per problem, naming the key as
the user wrote it: the one formatter for config files
(:mod:`tapir.config.validation`, "keys") and components' declared options
(:mod:`tapir.options`, "options").

What both get: a union's per-branch errors merged into one ("should be A,
or B") unless a branch got past the union's own level; one line per
location; an unknown key with a did-you-mean and the keys allowed where it
was written; a key that holds a credential (``api_key``, ``hf_token``)
refused without echoing its value. Only the wording differs
(:data:`KEYS`, :data:`OPTIONS`).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError


@dataclass(frozen=True)
class Wording:
    """How a kind of problem reads; ``{loc}``, ``{hint}``, ``{allowed}``,
    ``{doc}``, ``{msg}`` and ``{got}`` are filled in."""

    unknown: str
    missing: str
    invalid: str


# A config file's keys (tapir.config).
KEYS = Wording(unknown="unknown key '{loc}'.{hint} Allowed here: {allowed}",
               missing="missing required key '{loc}'{doc}",
               invalid="'{loc}': {msg}{got}")
# A component's declared options (tapir.options).
OPTIONS = Wording(unknown="unknown option '{loc}'.{hint} Allowed: {allowed}",
                  missing="missing required option '{loc}'{doc}",
                  invalid="option '{loc}': {msg}{got}")

# Key names that hold a credential (``api_key``, ``hf_token``; not ``api_key_env`` or ``max_new_tokens``).
_SECRET = re.compile(r"^(?:(?:\w+_)?(?:api_?key|secret|password)|(?:hf_|api_|access_|auth_|bearer_)?token)$")


def is_secret(key: str) -> bool:
    """Whether a key of that name holds a credential."""
    low = key.lower()
    return bool(_SECRET.match(low)) and not low.startswith(("max_", "min_", "top_"))


def problems(exc: ValidationError, model: type[BaseModel], where: str, wording: Wording = KEYS) -> list[str]:
    """Every problem in ``exc`` (raised validating ``model``), one line each,
    starting with ``where`` (a file, or a file and a section)."""
    lines = []
    seen = set()
    for err in _merge_union_branches(exc.errors()):
        parts = tuple(p for p in err["loc"] if not _is_tag(p))
        loc = location(parts)
        if loc in seen:  # unions report one error per branch: the first per location
            continue
        seen.add(loc)
        owner = _owner(model, parts)
        if err["type"] == "extra_forbidden":
            allowed = sorted(owner.model_fields) if owner else []
            key = str(parts[-1])
            if is_secret(key):
                env_hint = (" with api_key_env naming the variable (e.g. api_key_env: MY_KEY)"
                            if "api_key_env" in allowed else "")
                lines.append(f"{where}: '{loc}' holds a credential: keys never go into a config (it is stored "
                             f"with the run). Remove it and export the key as an environment variable instead"
                             f"{env_hint}")
                continue
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            lines.append(f"{where}: " + wording.unknown.format(loc=loc, hint=hint, allowed=", ".join(allowed) or "none"))
        elif err["type"] == "missing":
            field = owner.model_fields.get(str(parts[-1])) if owner is not None and parts else None
            doc = f" ({field.description})" if field is not None and field.description else ""
            lines.append(f"{where}: " + wording.missing.format(loc=loc, doc=doc))
        else:
            got = err.get("input")
            shown = got is not None and not isinstance(got, dict) and not any(is_secret(str(p)) for p in parts)
            got_text = f" (got {got!r:.60})" if shown else ""  # never echo a credential
            if not loc:  # the whole config (or component options) is wrong: no key to name
                lines.append(f"{where}: {err['msg']}{got_text}")
                continue
            lines.append(f"{where}: " + wording.invalid.format(loc=loc, msg=err["msg"], got=got_text))
    return lines


def location(parts: tuple) -> str:
    """``judge.options.params`` / ``stages[2].name``, as the user wrote it."""
    out = []
    for p in parts:
        out.append(f"[{p}]" if isinstance(p, int) else ("." if out else "") + str(p))
    return "".join(out)


def _is_tag(part: Any) -> bool:
    """A union-branch tag in an error location ('literal[...]', 'dict[str,float]',
    'function-after[...]'), not a key the user wrote."""
    return isinstance(part, str) and (part.startswith("function-") or "[" in part)


def _owner(model: type[BaseModel], parts: tuple) -> type[BaseModel] | None:
    """The model class whose key is the last of ``parts`` (a nested key such
    as ``params.temperatre`` belongs to the ``params`` model); None when the
    path leaves the models (a mapping's key, a list's element)."""
    current: Any = model
    for part in parts[:-1]:
        if isinstance(part, int):
            continue
        field = current.model_fields.get(part)
        if field is None:
            return None
        annotation = field.annotation
        candidates = [annotation, *getattr(annotation, "__args__", ())]
        current = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if current is None:
            return None
    return current


def _merge_union_branches(errors: list[dict]) -> list[dict]:
    """Pydantic reports one error per branch of a union, each under a tag.
    Keep the branches that got past the union's own level (the input had
    their shape, so their errors are the real ones); when none did, merge the
    branches into one error at the union's key: "should be A, or B"."""
    out: list[dict] = []
    groups: dict[tuple, list[tuple[int, dict]]] = {}
    for err in errors:
        loc = tuple(err["loc"])
        tag_at = next((i for i, p in enumerate(loc) if _is_tag(p)), None)
        if tag_at is None:
            out.append(err)
            continue
        union_loc = loc[:tag_at]
        if union_loc not in groups:
            groups[union_loc] = []
            out.append({"_union": union_loc})
        groups[union_loc].append((tag_at, err))
    merged: list[dict] = []
    for err in out:
        if "_union" not in err:
            merged.append(err)
            continue
        union_loc = err["_union"]
        branches = groups[union_loc]
        deeper = [e for tag_at, e in branches if len(e["loc"]) > tag_at + 1]
        if deeper:
            merged.extend({**e, "loc": tuple(p for p in e["loc"] if not _is_tag(p))} for e in deeper)
            continue
        msgs = list(dict.fromkeys(e["msg"] for _, e in branches))
        msg = msgs[0] + "".join(", or " + m.removeprefix("Input should be ") for m in msgs[1:])
        merged.append({**branches[0][1], "loc": union_loc, "msg": msg})
    return merged
