"""``tapir runs`` and ``tapir runs show RUN``: runs, their stages, counts and
failures, from the store. Read-only: a missing database is an error, never
created."""

from __future__ import annotations

import json

import click


def _open(db):
    from tapir.store import open_store

    # read-only: never migrates or writes; a folder, a missing file or a file
    # that is no tapir database is the same one message (exit 2) as in every command
    return open_store(db, readonly=True)


def _stage_rows(store, run_id: str) -> list[dict]:
    from tapir.pipeline.counts import handled

    rows = []
    for s in store["stages"].rows_where("run_id = ?", [run_id], order_by="id"):
        info = json.loads(s["info"]) if s["info"] else {}
        counts = {k: info.get(k, 0) for k in ("ok", "failed", "calls", "tokens", "cost", "truncated", "maybe_billed")}
        counts["ok"] = handled(s["name"], counts["ok"], counts["failed"], info)
        rows.append({**s, "info": info, **counts, "attempts": info.get("attempts", info.get("calls", 0))})
    return rows


def run_details(store, run_ref: str) -> dict:
    """Everything ``runs show`` prints about the run ``run_ref`` names (id, id prefix or name)."""
    from tapir.runs import resolve_run

    row = store.execute("select id, name, status, created_at, updated_at from runs where id = ?",
                        [resolve_run(store, run_ref)]).fetchone()
    run = dict(zip(("id", "name", "status", "created_at", "updated_at"), row))
    stages = _stage_rows(store, run["id"])
    failures = []
    for s in stages:
        if not s["key"]:
            continue
        for kind, count, example_item, example in store.execute(
            "select error_kind, count(*), min(item_id), min(reason) from outcomes "
            "where scope = ? and status = 'failed' group by error_kind order by count(*) desc", [s["key"]]
        ):
            failures.append({"stage": s["name"], "round": s["round"], "kind": kind, "count": count,
                             "example_item": example_item, "example": example})
    by_role = [dict(zip(("role", "calls", "errors", "tokens", "cost"), r)) for r in store.execute(
        "select coalesce(role, '?'), count(*), sum(error is not null), "
        "coalesce(sum(coalesce(prompt_tokens, 0) + coalesce(completion_tokens, 0)), 0), coalesce(sum(cost), 0) "
        "from llm_calls where stage_key in (select key from stages where run_id = ?) group by role",
        [run["id"]])]
    from tapir.pipeline.curriculum_notes import curriculum_lines

    curriculum = curriculum_lines((s["name"], s["round"], s["info"]) for s in stages)
    return {**run, "stages": stages, "failures": failures, "calls_by_role": by_role, "outputs": _outputs(stages),
            "curriculum": curriculum, "budget": _budget(store, run["id"])}


def _budget(store, run_id: str) -> dict | None:
    """The run's budget (from its config) and what its calls cost against it, by role."""
    from tapir.budget import spent_by_role

    row = store.execute("select config from runs where id = ?", [run_id]).fetchone()
    config = json.loads(row[0]) if row and row[0] else {}
    budget = config.get("budget") or {}
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


def register(cli):
    @cli.group(invoke_without_command=True)
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_context
    def runs(click_ctx, as_json):
        """List runs and the status of each stage (``runs show RUN`` for one run)."""
        if click_ctx.invoked_subcommand is not None:
            return
        store = _open(click_ctx.obj["db"])
        out = []
        for run in store["runs"].rows_where(order_by="created_at"):
            stages = _stage_rows(store, run["id"])
            out.append({**{k: run[k] for k in ("id", "name", "status", "created_at")}, "stages": stages})
        if as_json:
            click.echo(json.dumps(out, indent=2))
            return
        if not out:
            click.echo(f"no runs in {store.path}")
        for run in out:
            click.echo(f"{run['id']}  {run['name']}  {run['status']}  {run['created_at']}")
            for s in run["stages"]:
                secs = f"{s['seconds']:.1f}s" if s["seconds"] is not None else ""
                status = "reused" if s.get("reused_from") else s["status"]
                reason = f"  {s['info'].get('error', '').splitlines()[0]}" if s["status"] == "failed" and \
                    s["info"].get("error") else ""
                click.echo(f"    {s['name']:<24} round {s['round']}  {status:<8} {secs}{reason}")

    @runs.command("show")
    @click.argument("run_id", metavar="RUN")
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_obj
    def show(obj, run_id, as_json):
        """One run (RUN: its id, a unique id prefix or its name): per stage
        the items ok / failed / reused, calls, tokens, cost and time; failures
        with their reasons; calls by role."""
        from tapir.cli.distill_cmd import stage_table

        store = _open(obj["db"])
        details = run_details(store, run_id)
        if as_json:
            click.echo(json.dumps(details, indent=2, default=str))
            return
        click.echo(f"run {details['id']} ({details['name']}): {details['status']}, "
                   f"started {details['created_at']}, updated {details['updated_at']}")
        click.echo("")
        for line in stage_table(details["stages"]):
            click.echo(line)
        from tapir.judging import provenance_text

        judged = [(s["round"], provenance_text(s["info"])) for s in details["stages"] if s["name"] == "judge"]
        if any(text for _, text in judged):
            click.echo("\nMFD judgments (how each score was read):")
            for round_, text in judged:
                if text:
                    click.echo(f"  S{round_}: {text}")
        errors = [s for s in details["stages"] if s["status"] == "failed"]
        for s in errors:
            click.echo(f"\nstage {s['name']} (round {s['round']}) failed:\n  {s['info'].get('error', '?')}")
        if details["failures"]:
            click.echo("\nfailed items:")
            for f in details["failures"]:
                click.echo(f"  {f['stage']} (round {f['round']}): {f['count']} x {f['kind']}, "
                           f"e.g. {f['example_item']}: {f['example']}")
        if details["budget"]:
            from tapir.budget import Budget

            b = details["budget"]
            click.echo("")
            for line in Budget(b["max_cost_usd"], b["per_role"], b["spent_by_role"]).lines():
                click.echo(line)
        if details["calls_by_role"]:
            click.echo("\ncalls by role:")
            for r in details["calls_by_role"]:
                click.echo(f"  {r['role']:<12} {r['calls']:>7} calls  {r['errors'] or 0:>5} errors  "
                           f"{r['tokens']:>9} tokens  ${r['cost']:.4f}")
        if details["curriculum"]:
            click.echo("\ncurriculum:")
            for line in details["curriculum"]:
                click.echo(f"  {line}")
        if details["outputs"]:
            click.echo("\noutputs:")
            for o in details["outputs"]:
                click.echo(f"  {o['what']:<28} {o['value']}")
