"""``tapir runs``: runs and their stages, from the store."""

from __future__ import annotations

import json

import click


def register(cli):
    @cli.command()
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_obj
    def runs(obj, as_json):
        """List runs and the status of each stage."""
        from tapir.store import open_store

        store = open_store(obj["db"])
        out = []
        for run in store["runs"].rows_where(order_by="created_at"):
            stages = list(store["stages"].rows_where("run_id = ?", [run["id"]], order_by="id"))
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
                click.echo(f"    {s['name']:<24} round {s['round']}  {s['status']:<8} {secs}")
