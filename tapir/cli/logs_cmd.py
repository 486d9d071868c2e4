"""``tapir logs``: the LLM calls in the store, newest first (as ``llm logs``).

Each call shows its role, stage, round and item, the model, tokens, cost,
latency, why it stopped (``length``: cut at max_new_tokens), its error if
any, and the prompt and response (cut at ``--width`` characters unless
``--full``). Read-only: a missing database is an error, never created; an
unknown run, stage, role or model is an error naming the known ones.
"""

from __future__ import annotations

import json
from typing import Any

import click

from tapir.errors import ConfigError

def _one_of(value: str, known: list[str], what: str) -> None:
    if value not in known:
        shown = ", ".join(known[:20]) + (" ..." if len(known) > 20 else "")
        raise ConfigError(f"no {what} '{value}' in the call log. Known: {shown or 'none'}")


def select_calls(store, *, run: str | None = None, stage: str | None = None, role: str | None = None,
                 model: str | None = None, status: str | None = None, item: str | None = None,
                 round_: int | None = None, count: int = 3) -> list[dict[str, Any]]:
    """The newest ``count`` calls (0: all) matching every filter given, newest first.

    ``run``: a run id, unique id prefix or name (calls of its stages' keys, reused stages
    included, and calls it made outside any stage); ``stage``: a stage name
    (within ``run`` when given) or a stage key or key prefix."""
    from tapir.store import calls, stages

    run_id = None
    stage_keys: tuple[str, ...] = ()
    stage_prefix = None
    if run is not None:
        from tapir.runs import resolve_run

        run_id = resolve_run(store, run)
    if stage is not None:
        stage_keys = tuple(stages.keys_named(store, stage, run_id))
        if not stage_keys:
            if not calls.has_stage_key_prefix(store, stage):
                names = stages.stage_names(store, run_id)
                raise ConfigError(f"no stage '{stage}'{f' in run {run_id}' if run_id else ''} (a stage name or key). "
                                  f"Stages: {', '.join(names) or 'none'}")
            stage_prefix = stage
    if role is not None:
        _one_of(role, calls.logged_roles(store), "role")
    if model is not None:
        _one_of(model, calls.logged_models(store), "model")
    where = calls.CallFilter(run_id=run_id, stage_keys=stage_keys, stage_key_prefix=stage_prefix, role=role,
                             model=model, ok=None if status is None else status == "ok", item_id=item, round=round_)
    rows = calls.logged_calls(store, where, count)
    names = stages.names_of_keys(store, sorted({r["stage_key"] for r in rows if r["stage_key"]}))
    for r in rows:
        r["stage"] = names.get(r["stage_key"])
    return rows


def _cut(text: str | None, width: int | None) -> str:
    text = text or ""
    if width is None or len(text) <= width:
        return text
    return text[:width] + f" ... [{len(text) - width} more characters; --full shows all]"


def _attempts(log: str | None) -> str:
    """Each attempt of a call in a few words: '1 timeout 60.0 s (maybe billed), 2 ok 12.3 s'."""
    try:
        entries = json.loads(log or "[]")
    except ValueError:
        return "?"
    parts = []
    for a in entries:
        status = f" HTTP {a['http_status']}" if a.get("http_status") else ""
        billed = " (maybe billed)" if a.get("billed") == "maybe" else ""
        parts.append(f"{a.get('n')} {a.get('outcome')}{status} {a.get('seconds', 0):.1f} s{billed}")
    return ", ".join(parts) or "none sent"


def render(call: dict[str, Any], width: int | None) -> list[str]:
    where = [call["role"] or "?"]
    if call["stage"] or call["stage_key"]:
        where.append(f"{call['stage'] or 'stage'} {call['stage_key'][:12] if call['stage_key'] else ''}".strip())
    if call["round"] is not None:
        where.append(f"round {call['round']}")
    if call["item_id"]:
        where.append(f"item {call['item_id']}")
    lines = [f"## call {call['id']}  {call['created_at']}  " + ", ".join(where)]
    facts = [call["model"] or "?"]
    if call["prompt_tokens"] is not None or call["completion_tokens"] is not None:
        facts.append(f"{call['prompt_tokens'] or 0} + {call['completion_tokens'] or 0} tokens")
    if call["latency_s"] is not None:
        facts.append(f"{call['latency_s']:.2f} s")
    if call["cost"]:
        facts.append(f"${call['cost']:.6f}")
    if call["finish_reason"]:
        facts.append(f"finish: {call['finish_reason']}"
                     + (" (cut at max_new_tokens)" if call["finish_reason"] == "length" else ""))
    if call["sample"]:
        facts.append(f"sample {call['sample']}")
    lines.append(", ".join(facts))
    if call["attempt_log"] and (call["attempts"] or 0) > 1 or call.get("failure_kind"):
        lines.append("attempts: " + _attempts(call["attempt_log"])
                     + (f" ({call['failure_kind']} failure)" if call.get("failure_kind") else ""))
    messages = call["messages"] if isinstance(call["messages"], list) else [{"role": "?", "content": call["messages"]}]
    lines.append("")
    lines.append("### prompt")
    for m in messages:
        lines.append(f"[{m.get('role', '?')}] {_cut(str(m.get('content', '')), width)}")
    lines.append("")
    if call["error"]:
        lines.append("### error")
        lines.append(_cut(call["error"], width))
    else:
        lines.append("### response")
        lines.append(_cut(call["response"], width))
    lines.append("")
    return lines


def register(cli):
    @cli.command()
    @click.option("--run", "run", default=None, help="A run (id, unique id prefix or name): the calls of its stages.")
    @click.option("--stage", default=None, help="A stage name (teacher_answers, judge, ...) or stage key.")
    @click.option("--role", default=None, help="teacher, judge, rewriter, student, classifier, ...")
    @click.option("-m", "--model", default=None, help="Model id, as recorded (see `tapir logs --json`).")
    @click.option("--status", type=click.Choice(["ok", "error"]), default=None, help="Only answered or failed calls.")
    @click.option("--item", default=None, help="An item id.")
    @click.option("--round", "round_", type=int, default=None, help="A curriculum round.")
    @click.option("-n", "--count", default=3, show_default=True, help="How many calls, newest first (0: all).")
    @click.option("--full", is_flag=True, help="Do not cut long prompts and responses.")
    @click.option("--width", default=500, show_default=True, type=click.IntRange(min=1),
                  help="Characters shown per message unless --full.")
    @click.option("--json", "as_json", is_flag=True, help="The calls as a JSON list (messages and params parsed).")
    @click.pass_obj
    def logs(obj, run, stage, role, model, status, item, round_, count, full, width, as_json):
        """The LLM calls in the database, newest first: role, stage, round,
        item, model, tokens, latency, finish reason, prompt and response."""
        from tapir.store import open_store

        if count < 0:
            raise ConfigError("-n must be 0 (all) or more")
        store = open_store(obj["db"], create=False)
        try:
            found = select_calls(store, run=run, stage=stage, role=role, model=model, status=status, item=item,
                                 round_=round_, count=count)
            if as_json:
                click.echo(json.dumps(found, indent=2, ensure_ascii=False, default=str))
                return
            if not found:
                click.echo(f"no calls match in {store.path}")
                return
            for call in found:
                click.echo("\n".join(render(call, None if full else width)))
        finally:
            store.close()

    @cli.command("datasette-metadata")
    @click.option("--yaml", "as_yaml", is_flag=True,
                  help="Print the metadata itself, its database named after --db's file (default tapir).")
    @click.pass_obj
    def datasette_metadata(obj, as_yaml):
        """Print the path of tapir's datasette metadata (table, view and
        column descriptions): datasette tapir.db -m "$(tapir datasette-metadata)"."""
        from tapir.datasette import metadata_for, metadata_path
        from tapir.store.db import resolve_db_path

        if not as_yaml:
            click.echo(str(metadata_path()))
            return
        import yaml

        click.echo(yaml.safe_dump(metadata_for(resolve_db_path(obj["db"])), sort_keys=False, allow_unicode=True,
                                  width=100), nl=False)
