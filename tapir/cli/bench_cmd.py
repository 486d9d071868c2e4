"""``tapir bench`` (run, list, suite) and ``tapir compare``.

``tapir bench NAME --model M`` is short for ``tapir bench run NAME --model M``.
Heavy libraries (lm_eval, torch, matplotlib) load only inside the commands.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from tapir.cli.options import parse_options


def format_rows(rows: list[dict[str, Any]]) -> str:
    """The stored rows of one benchmark run as an aligned text table."""
    header = ["task", "metric", "value", "stderr", "n"]
    body = [
        [str(r["task"]), str(r["metric"]),
         "" if r["value"] is None else f"{r['value']:.4f}",
         "" if r.get("stderr") is None else f"{r['stderr']:.4f}",
         "" if r.get("n") is None else str(r["n"])]
        for r in rows
    ]
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
             for cells in [header, *body]]
    return "\n".join(line.rstrip() for line in lines)


class BenchGroup(click.Group):
    """A group where an unknown first word is a benchmark name for ``run``."""

    def parse_args(self, ctx, args):
        if args and not args[0].startswith("-") and args[0] not in self.commands:
            args = ["run", *args]
        return super().parse_args(ctx, args)


_OPTION_HELP = "Benchmark option key=value (value read as YAML); repeatable."


def _store(obj):
    from tapir.store import open_store

    return open_store(obj["db"])


def register(cli):
    @cli.group(cls=BenchGroup)
    def bench():
        """Run benchmarks into the store: `tapir bench NAME --model M`."""

    @bench.command("run")
    @click.argument("name")
    @click.option("--model", "-m", "model", required=True, help="Model id, folder or checkpoint path.")
    @click.option("-o", "--option", "pairs", multiple=True, help=_OPTION_HELP)
    @click.option("--force", is_flag=True, help="Run again even when the results are stored.")
    @click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
    @click.pass_obj
    def run_cmd(obj, name, model, pairs, force, as_json):
        """Run benchmark NAME on a model and print its rows."""
        from tapir.bench import is_done, run_benchmark

        options = parse_options(pairs)
        store = _store(obj)
        if not force and is_done(store, name, model, options):
            click.echo(f"{name} on {model}: already in the store (use --force to run again)", err=True)
        rows = run_benchmark(store, name, model, options, force=force)
        if as_json:
            click.echo(json.dumps(rows, indent=2, default=str))
        else:
            click.echo(format_rows(rows))

    @bench.command("list")
    @click.option("--json", "as_json", is_flag=True)
    def list_cmd(as_json):
        """List benchmarks (evaluators) and built-in suites."""
        from tapir.bench import BUILTIN_SUITES
        from tapir.plugins import registry

        reg = registry()
        items = [
            {"name": c.name, "plugin": c.plugin, "available": c.available, "reason": c.reason,
             "description": c.description}
            for c in sorted(reg.by_role["evaluators"].values(), key=lambda c: c.name)
        ]
        suites = {name: [{"benchmark": e.benchmark, "options": e.options} for e in entries]
                  for name, entries in sorted(BUILTIN_SUITES.items())}
        if as_json:
            click.echo(json.dumps({"benchmarks": items, "suites": suites}, indent=2))
            return
        click.echo("Benchmarks:")
        for item in items:
            mark = "" if item["available"] else f"  [unavailable: {item['reason']}]"
            click.echo(f"  {item['name']:<14} {item['description']}{mark}")
        click.echo("Suites (tapir bench suite NAME_OR_FILE --model M ...):")
        for name, entries in suites.items():
            desc = ", ".join(e["benchmark"] + (f" {e['options']}" if e["options"] else "") for e in entries)
            click.echo(f"  {name:<14} {desc}")

    @bench.command("suite")
    @click.argument("suite")
    @click.option("--model", "-m", "models", multiple=True, required=True, help="Model to evaluate; repeatable.")
    @click.option("-o", "--option", "pairs", multiple=True,
                  help="key=value added to every benchmark's options; repeatable.")
    @click.option("--force", is_flag=True, help="Run pairs again even when their results are stored.")
    @click.option("--fail-fast", is_flag=True, help="Stop at the first failing pair.")
    @click.pass_obj
    def suite_cmd(obj, suite, models, pairs, force, fail_fast):
        """Run SUITE (a built-in name or a YAML list of {benchmark, options})
        on every --model, skipping pairs already in the store."""
        from tapir.bench import load_suite, run_suite

        entries = load_suite(suite)
        extra = parse_options(pairs)
        for entry in entries:
            entry.options = {**entry.options, **extra}
        store = _store(obj)

        def progress(i, total, result, benchmark, model):
            if result is None:
                click.echo(f"[{i}/{total}] {benchmark} on {model} ...", err=True)
            elif result.status == "failed":
                click.echo(f"[{i}/{total}]   FAILED: {result.error}", err=True)
            elif result.status == "skipped":
                click.echo(f"[{i}/{total}]   skipped: already in the store ({len(result.rows)} rows)", err=True)
            else:
                click.echo(f"[{i}/{total}]   done: {len(result.rows)} rows in {result.seconds:.1f}s", err=True)

        results = run_suite(store, entries, list(models), force=force, fail_fast=fail_fast, on_progress=progress)
        counts = {s: sum(r.status == s for r in results) for s in ("ran", "skipped", "failed")}
        click.echo(f"{counts['ran']} ran, {counts['skipped']} skipped, {counts['failed']} failed")
        if counts["failed"]:
            sys.exit(1)

    @cli.command()
    @click.argument("refs", nargs=-1)
    @click.option("--format", "fmt", type=click.Choice(["markdown", "csv", "json"]), default="markdown",
                  show_default=True)
    @click.option("--base", "bases", multiple=True,
                  help="Base model for models with no checkpoint record: BASE, or MODEL=BASE; repeatable.")
    @click.option("--benchmark", "benchmarks", multiple=True, help="Only these benchmarks; repeatable.")
    @click.option("--all-metrics", is_flag=True, help="Every stored metric, not only the headline ones.")
    @click.option("--no-delta", is_flag=True, help="Leave out the delta-vs-base view.")
    @click.option("--plot", "plot_path", type=click.Path(dir_okay=False), help="Also write a bar chart (PNG).")
    @click.pass_obj
    def compare(obj, refs, fmt, bases, benchmarks, all_metrics, no_delta, plot_path):
        """Benchmark scores side by side: REFS are models, checkpoint paths or
        run ids (all stored models when none). Each backbone's base model
        comes first, with every student's delta against it."""
        from tapir import compare as cmp

        store = _store(obj)
        table = cmp.build(store, list(refs), list(bases), all_metrics=all_metrics,
                          benchmarks=list(benchmarks) or None)
        click.echo(cmp.render(table, fmt, delta=not no_delta), nl=False)
        if plot_path:
            cmp.plot(table, plot_path)
            click.echo(f"wrote {plot_path}", err=True)
