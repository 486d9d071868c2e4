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


def register(cli):
    @cli.group(invoke_without_command=True)
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_context
    def runs(click_ctx, as_json):
        """List runs and the status of each stage (``runs show RUN`` for one run)."""
        if click_ctx.invoked_subcommand is not None:
            return
        from tapir.runs import stage_rows
        from tapir.store.runs import all_runs

        store = _open(click_ctx.obj["db"])
        out = []
        for run in all_runs(store):
            stages = stage_rows(store, run["id"])
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
        from tapir.runs import run_details

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
        from tapir.judge_reads import provenance_text

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
