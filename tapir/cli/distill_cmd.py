"""``tapir distill`` (the main job) and ``tapir mfd`` (the MFD distribution)."""

from __future__ import annotations

import json

import click


def _summary(ctx) -> str:
    lines = [f"run {ctx.run.id} ({ctx.config.name}) finished.", "", "stage                 round  status    seconds"]
    total = 0.0
    for s in ctx.run.stages():
        secs = s["seconds"] or 0.0
        total += secs
        lines.append(f"{s['name']:<22}{s['round']:>5}  {s['status']:<8}{secs:>9.1f}")
    lines.append(f"{'total':<22}{'':>5}  {'':<8}{total:>9.1f}")
    ckpts = ctx.store.execute(
        "select round, path from checkpoints where run_id = ? order by round", [ctx.run.id]
    ).fetchall()
    lines += ["", f"database:    {ctx.store.path}   (browse: datasette {ctx.store.path})",
              f"outputs:     {ctx.out_dir}"]
    for rnd, path in ckpts:
        lines.append(f"checkpoint:  S{rnd} -> {path}")
    for name in ("dataset.jsonl", "dataset", "mfd.png"):
        p = ctx.out_dir / name
        if p.exists():
            lines.append(f"export:      {p}")
    return "\n".join(lines)


def register(cli):
    @cli.command()
    @click.argument("config", type=click.Path(dir_okay=False))
    @click.pass_obj
    def distill(obj, config):
        """Run the TAPIR pipeline described by CONFIG (YAML). Safe to re-run:
        finished stages and items are skipped and no LLM call is paid twice."""
        from tapir.pipeline.runner import distill as run_distill

        ctx = run_distill(config, obj["db"])
        click.echo(_summary(ctx))

    @cli.command()
    @click.argument("config", type=click.Path(dir_okay=False))
    @click.option("--round", "round_", default=0, show_default=True, help="Student round (0 = S0).")
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_obj
    def mfd(obj, config, round_, as_json):
        """Show the MFD distribution of CONFIG's run, to help pick delta."""
        from tapir.config import load_config
        from tapir.pipeline.mfd import distribution, histogram
        from tapir.runs import run_id_for
        from tapir.store import open_store

        cfg = load_config(config, check_references=False)
        store = open_store(obj["db"] or cfg.db)
        run_id = run_id_for(cfg.model_dump(mode="json"))
        values = [
            r[0]
            for r in store.execute(
                "select value from scores where run_id = ? and name = 'mfd' and round = ?", [run_id, round_]
            ).fetchall()
        ]
        if not values:
            raise click.ClickException(
                f"no MFD scores for run {run_id} round {round_} in {store.path}; run `tapir distill {config}` first"
            )
        stats = distribution(values)
        if as_json:
            click.echo(json.dumps({"run_id": run_id, "round": round_, **stats, "values": values}))
            return
        click.echo(f"MFD of run {run_id}, student S{round_}: " + ", ".join(f"{k} {v}" for k, v in stats.items()))
        click.echo(histogram(values))
        for delta in (0.5, 1, 2, 3):
            kept = sum(v > delta for v in values)
            click.echo(f"delta {delta:>3}: {kept} of {len(values)} kept ({kept / len(values):.0%})")
