"""Runs and stages: what makes every command resumable.

A run is identified by the hash of its config, so re-running a command with
the same config finds the same run. Each stage (name, round) is marked
``running`` when it starts and ``done`` when it finishes; a re-run skips done
stages, and a stage that was cut off runs again, where it skips the items it
already wrote (each stage checks its own rows).
"""

from __future__ import annotations

import hashlib
import re
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from tapir import __version__
from tapir.errors import ConfigError
from tapir.store import runs as run_rows
from tapir.store import stages as stage_table
from tapir.store.db import Store, dumps, utcnow
from tapir.store.stages import calls_by_role, decode_info, encode_info, failures_by_kind, run_stages

# Secret-looking keys. "token" alone or with an auth-ish prefix (hf_token,
# access_token), but not tokenizer settings such as pad_token / eos_token:
# those change the run, and redacting them would merge two runs' ids.
_SECRET = re.compile(
    r"(api[_-]?key|secret|password|passwd|credential|authorization"
    r"|^token$|(^|[_-])(hf|hub|access|auth|api|bearer|refresh|session|github)[_-]?token$)",
    re.I,
)
# Secret-looking values, whatever their key: provider key prefixes.
_SECRET_VALUE = re.compile(
    r"^(?:(?:sk-|sk_|gsk_|xai-|ghp_|github_pat_)[A-Za-z0-9_\-]{20,}|hf_[A-Za-z0-9]{30,}"
    r"|AIza[A-Za-z0-9_\-]{30,}|Bearer\s+\S{16,})$"
)


def redact(value: Any) -> Any:
    """Drop values of secret-looking keys (and values that look like API
    keys), so keys never reach the store."""
    if isinstance(value, dict):
        return {k: ("<redacted>" if _SECRET.search(str(k)) else redact(v)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    if isinstance(value, str):
        if _SECRET_VALUE.match(value.strip()):
            return "<redacted>"
        return redact_text(value)  # a key inside a URL, header or message
    return value


# Secrets inside free text: provider key shapes, bearer tokens, key=value
# query parameters, user:password@ in URLs, and key headers or fields as an
# error text quotes them ("Authorization: Bearer ...", "x-api-key: ...",
# '"api_key": "..."').
_SECRET_IN_TEXT = re.compile(
    r"(?P<header>\b(?:proxy-)?(?:authorization|x-api-key|api-key|api_key|apikey|x-goog-api-key)[\"']?\s*[:=]\s*"
    r"[\"']?(?:(?:bearer|basic)\s+)?)[^\s\"',;}&]+"
    r"|(?<![A-Za-z0-9])(?:sk-|sk_|gsk_|xai-|ghp_|github_pat_)[A-Za-z0-9_\-]{16,}|hf_[A-Za-z0-9]{30,}"
    r"|AIza[A-Za-z0-9_\-]{30,}"
    r"|(?P<bearer>Bearer )\S{8,}"
    r"|(?P<param>[?&;](?:api[-_]?key|key|token|access_token|secret|password|sig|signature)=)[^&\s'\"]+"
    r"|(?P<scheme>://)[^/\s:@'\"]+:[^/\s@'\"]+@",
    re.I,
)


def _redact_match(m: re.Match) -> str:
    prefix = m.group("header") or m.group("bearer") or m.group("param") or m.group("scheme") or ""
    return prefix + "<redacted>" + ("@" if m.group("scheme") else "")


def redact_text(text: str) -> str:
    """``text`` with anything that looks like a key replaced by ``<redacted>``."""
    return _SECRET_IN_TEXT.sub(_redact_match, text) if text else text


def config_hash(config: dict[str, Any]) -> str:
    return hashlib.sha256(dumps(redact(config)).encode()).hexdigest()


def run_id_for(config: dict[str, Any]) -> str:
    """The id :meth:`Run.start` gives a run of this config. The budget is not
    part of it: raising ``budget.max_cost_usd`` resumes the same run."""
    return config_hash({k: v for k, v in config.items() if k != "budget"})[:16]


# An id prefix shorter than this is not looked up (a typo of a name would
# match some id by chance).
MIN_PREFIX = 4


def resolve_run(store: Store, text: str) -> str:
    """The id of the run ``text`` names: its id, its name (the latest run of
    that name) or a unique prefix of its id (``MIN_PREFIX``+ characters).

    Every command that takes a run calls this, so all of them accept the same
    words and fail with the same message: an unknown run or an ambiguous
    prefix is a :class:`ConfigError` (exit 2) listing the candidates."""
    text = (text or "").strip()
    if run_rows.run_exists(store, text):
        return text
    named = run_rows.latest_run_named(store, text)
    if named:
        return named
    matches = []
    if len(text) >= MIN_PREFIX:
        matches = run_rows.runs_with_id_prefix(store, text)
    if len(matches) == 1:
        return matches[0][0]
    if matches:
        raise ConfigError(f"run '{text}' is ambiguous in {store.path}: it starts {len(matches)} run ids: "
                          f"{_listed(matches)}. Give more characters of the id, or the run's name")
    recent = run_rows.recent_runs(store, 10)
    short = f" (an id prefix needs {MIN_PREFIX}+ characters)" if 0 < len(text) < MIN_PREFIX else ""
    raise ConfigError(f"no run '{text}' in {store.path}: not a run id, id prefix or name{short}. "
                      f"Recent runs: {_listed(recent) or 'none'} (`tapir runs` lists them)")


def _listed(rows) -> str:
    return ", ".join(f"{rid} ({name})" if name and name != rid else rid for rid, name in rows)


class Run:
    def __init__(self, store: Store, run_id: str, name: str):
        self.store = store
        self.id = run_id
        self.name = name

    @classmethod
    def start(cls, store: Store, config: dict[str, Any], name: str | None = None) -> "Run":
        digest = config_hash(config)
        run_id = run_id_for(config)
        now = utcnow()
        with store.transaction():
            # (an existing run gets the config as run now: it differs from the first one in its budget at most)
            run_rows.start_run(store, run_id, name or run_id, dumps(redact(config)), digest, __version__, now)
        return cls(store, run_id, name or run_id)

    def finish(self, status: str = "done") -> None:
        with self.store.transaction():
            run_rows.set_run_status(self.store, self.id, status, utcnow())

    def _row(self, name: str, round: int) -> dict | None:
        return stage_table.stage_row(self.store, self.id, name, round)

    def is_done(self, name: str, round: int = 0) -> bool:
        row = self._row(name, round)
        return bool(row and row["status"] == "done")

    def stage_info(self, name: str, round: int = 0) -> dict[str, Any]:
        """The ``info`` a stage stored (counts, figures); empty if none yet."""
        row = self._row(name, round)
        return decode_info(row["info"]) if row else {}

    def stages(self) -> list[dict]:
        return stage_table.stored_stages(self.store, self.id)

    @contextmanager
    def stage(self, name: str, round: int = 0) -> Iterator[dict[str, Any]]:
        """Mark a stage running, then done (or failed). The yielded dict is
        stored as the stage's ``info`` (counts, figures)."""
        info: dict[str, Any] = {}
        started = time.perf_counter()
        row = self._row(name, round)
        with self.store.transaction():
            if row is None:
                stage_table.add_stage(self.store, {"run_id": self.id, "name": name, "round": round,
                                                  "status": "running", "started_at": utcnow()})
            else:
                stage_table.update_stage(self.store, row["id"], {"status": "running", "started_at": utcnow()})
        row = self._row(name, round)
        try:
            yield info
        except BaseException as exc:
            with self.store.transaction():
                stage_table.update_stage(
                    self.store, row["id"],
                    {"status": "failed", "finished_at": utcnow(), "info": encode_info({**info, "error": repr(exc)})},
                )
            raise
        with self.store.transaction():
            stage_table.update_stage(
                self.store, row["id"],
                {
                    "status": "done",
                    "finished_at": utcnow(),
                    "seconds": float(f"{time.perf_counter() - started:.3f}"),  # (`round` is a parameter here)
                    "info": encode_info(info),
                },
            )

    def mark_stage(self, name: str, round: int, key: str, status: str, info: dict[str, Any] | None = None,
                   seconds: float | None = None, reused_from: str | None = None) -> None:
        """Record this run's view of pipeline node (name, round): its key
        and status (running | done | failed), info, and the run it reused."""
        now = utcnow()
        values = {"key": key, "status": status, "reused_from": reused_from}
        if status == "running":
            values.update(started_at=now, finished_at=None)
        else:
            values.update(finished_at=now, seconds=None if seconds is None else float(f"{seconds:.3f}"),
                          info=encode_info(info))
        with self.store.transaction():
            row = self._row(name, round)
            if row is None:
                stage_table.add_stage(self.store, {"run_id": self.id, "name": name, "round": round,
                                                  "started_at": now, **values})
            else:
                stage_table.update_stage(self.store, row["id"], values)

    def step(self, name: str, fn: Callable[[dict[str, Any]], Any], round: int = 0) -> bool:
        """Run ``fn(info)`` as stage (name, round) unless it is done already.
        Returns True when it ran."""
        if self.is_done(name, round):
            return False
        with self.stage(name, round) as info:
            fn(info)
        return True


# --------------------------------------------------------------------------- reading a run


def stage_rows(store: Store, run_id: str) -> list[dict]:
    """The stages of run ``run_id`` with their counts (ok, failed, calls,
    tokens, cost, truncated, maybe_billed, attempts) read from ``info``."""
    from tapir.pipeline.counts import handled

    rows = []
    for s in run_stages(store, run_id):
        info = s["info"]
        counts = {k: info.get(k, 0) for k in ("ok", "failed", "calls", "tokens", "cost", "truncated", "maybe_billed")}
        counts["ok"] = handled(s["name"], counts["ok"], counts["failed"], info)
        rows.append({**s, "info": info, **counts, "attempts": info.get("attempts", info.get("calls", 0))})
    return rows


def run_details(store: Store, run_ref: str) -> dict:
    """Everything ``runs show`` prints about the run ``run_ref`` names (id, id prefix or name)."""
    row = run_rows.run_row(store, resolve_run(store, run_ref))
    run = {k: row[k] for k in ("id", "name", "status", "created_at", "updated_at")}
    stages = stage_rows(store, run["id"])
    failures = []
    for s in stages:
        if not s["key"]:
            continue
        for kind, count, example_item, example in failures_by_kind(store, s["key"]):
            failures.append({"stage": s["name"], "round": s["round"], "kind": kind, "count": count,
                             "example_item": example_item, "example": example})
    by_role = calls_by_role(store, run["id"])
    from tapir.pipeline.curriculum_notes import curriculum_lines

    curriculum = curriculum_lines((s["name"], s["round"], s["info"]) for s in stages)
    return {**run, "stages": stages, "failures": failures, "calls_by_role": by_role, "outputs": _outputs(stages),
            "curriculum": curriculum, "budget": _budget(store, run["id"])}


def _budget(store, run_id: str) -> dict | None:
    """The run's budget (from its config) and what its calls cost against it, by role."""
    from tapir.budget import spent_by_role

    budget = run_rows.run_config(store, run_id).get("budget") or {}
    if budget.get("max_cost_usd") is None and not budget.get("per_role"):
        return None
    spent = spent_by_role(store, run_id)
    return {"max_cost_usd": budget.get("max_cost_usd"), "per_role": budget.get("per_role") or {},
            "spent": round(sum(spent.values()), 6), "spent_by_role": {k: round(v, 6) for k, v in spent.items()}}


def _outputs(stages: list[dict]) -> list[dict]:
    """What the run produced, from its stages' info: each round's checkpoint
    (the exported copies when the run got to export), the held-out loss of
    the base model and of every S_r, the exported files."""
    trained, scored, exported = [], [], []
    for s in stages:
        info = s["info"]
        if s["name"] == "train" and info.get("path"):
            trained.append({"what": f"checkpoint S{s['round']}", "value": info["path"]})
        elif s["name"] in ("evaluate", "evaluate_base") and info.get("nll") is not None:
            scored.append({"what": f"held-out nll {info.get('label', '?')}",
                           "value": f"{info['nll']:.4f} (perplexity {info.get('perplexity', float('nan')):.2f}, "
                                    f"n {info.get('n', '?')})"})
        elif s["name"] == "export":
            for key, label in (("jsonl", "dataset (JSONL)"), ("datasets_folder", "dataset (datasets folder)"),
                               ("mfd_plot", "MFD plot")):
                if info.get(key):
                    exported.append({"what": label, "value": info[key]})
            exported += [{"what": f"exported {name}", "value": path}
                         for name, path in (info.get("checkpoints") or {}).items()]
    checkpoints = [] if any(o["what"].startswith("exported ") for o in exported) else trained
    return checkpoints + scored + exported
