"""``tapir bench`` (run, list, suite) and ``tapir compare``.

``tapir bench NAME --model M`` is short for ``tapir bench run NAME --model M``.
Heavy libraries (lm_eval, torch, matplotlib) load only inside the commands.

Exit codes: 0 done; 1 the run failed (an error, or more failed judgments
than ``--max-failure-rate`` allows: the rows are stored flagged and a re-run
retries only the failures); 2 nothing was run or written (bad options,
unknown model, missing credentials, unknown names given to compare).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import click

from tapir.cli.options import parse_options


def format_rows(rows: list[dict[str, Any]]) -> str:
    """The stored rows of one benchmark run as an aligned text table."""
    with_failures = any("failures" in (r.get("meta") or {}) for r in rows)
    header = ["task", "metric", "value", "stderr", "n"] + (["failures"] if with_failures else [])
    body = []
    for r in rows:
        cells = [str(r["task"]), str(r["metric"]),
                 "" if r["value"] is None else f"{r['value']:.4f}",
                 "" if r.get("stderr") is None else f"{r['stderr']:.4f}",
                 "" if r.get("n") is None else str(r["n"])]
        if with_failures:
            failures = (r.get("meta") or {}).get("failures")
            cells.append("?" if failures is None else str(failures))
        body.append(cells)
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
             for cells in [header, *body]]
    return "\n".join(line.rstrip() for line in lines)


def describe_run(rows: list[dict[str, Any]]) -> str:
    """One line naming the run and what its numbers mean (judge, mode, subset, data, prompt template,
    weights), and the template warning on a second line when the run was off its training format."""
    from tapir.compare import MISSING, _one

    metas = [r.get("meta") or {} for r in rows]
    if not rows:
        return "no rows"

    def shown(key: str, none: str = "-") -> str:
        value = _one(metas, key)
        return none if value is None else str(value)

    def given(key: str) -> Any:
        value = _one(metas, key)
        return None if value is MISSING else value

    template, weights, warning = given("template"), given("weights"), given("template_warning")
    return (f"run {rows[0].get('run_id')}: judge {shown('judge')} ({shown('judge_mode')}), "
            f"subset {shown('subset', 'full')}, data {shown('data_version')}"
            + (f", template {template}" if template else "")
            + (f", weights {weights}" if weights else "")
            + (", FAILED" if any(m.get("run_failed") for m in metas) else "")
            + (f"\nwarning: {warning}" if warning else ""))


def _verbose(flag: bool) -> None:
    """-v: let other libraries' logs and warnings through (evaluators read TAPIR_VERBOSE)."""
    if flag:
        os.environ["TAPIR_VERBOSE"] = "1"


def _exit_on(exc: Exception, code: int):
    click.echo(f"Error: {exc}", err=True)
    sys.exit(code)


class BenchGroup(click.Group):
    """A group where an unknown first word is a benchmark name for ``run``."""

    def parse_args(self, ctx, args):
        if args and not args[0].startswith("-") and args[0] not in self.commands:
            args = ["run", *args]
        return super().parse_args(ctx, args)


_OPTION_HELP = "Benchmark option key=value (value read as YAML); repeatable."

# The image formats matplotlib writes (savefig picks one from the file's suffix).
_PLOT_FORMATS = {"png", "pdf", "svg", "svgz", "jpg", "jpeg", "eps", "ps", "tif", "tiff", "webp", "gif", "pgf"}


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
    @click.option("--force", is_flag=True,
                  help="Redo everything: delete this run's stored answers and judgments, bypass the LLM cache.")
    @click.option("--max-failure-rate", type=click.FloatRange(0.0, 1.0), default=0.0, show_default=True,
                  help="Share of items that may fail to be scored before the run fails (0: any failure fails).")
    @click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
    @click.option("-v", "--verbose", is_flag=True, help="Show other libraries' logs and warnings.")
    @click.pass_obj
    def run_cmd(obj, name, model, pairs, force, max_failure_rate, as_json, verbose):
        """Run benchmark NAME on a model and print its rows."""
        from tapir.bench import BenchFailed, create_evaluator, is_done, preflight, run_benchmark
        from tapir.errors import ConfigError
        from tapir.store import resolve_db_path

        _verbose(verbose)
        options = parse_options(pairs)
        fresh = not resolve_db_path(obj["db"]).exists()
        try:
            evaluator = create_evaluator(name, options)  # bad options: exit 2 before the database is opened
            if fresh:  # nothing can be stored yet: check before creating the database
                preflight(evaluator, name, model)
        except ConfigError as exc:
            _exit_on(exc, 2)
        store = _store(obj)
        if not force and is_done(store, name, model, options):
            click.echo(f"{name} on {model}: already in the store (use --force to run again)", err=True)
        try:
            rows = run_benchmark(store, name, model, options, force=force, max_failure_rate=max_failure_rate,
                                 evaluator=evaluator, checked=fresh)
        except ConfigError as exc:
            _exit_on(exc, 2)
        except BenchFailed as exc:
            click.echo(json.dumps(exc.rows, indent=2, default=str) if as_json else format_rows(exc.rows))
            _exit_on(exc, 1)
        if as_json:
            click.echo(json.dumps(rows, indent=2, default=str))
        else:
            click.echo(describe_run(rows), err=True)
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
    @click.option("--max-failure-rate", type=click.FloatRange(0.0, 1.0), default=0.0, show_default=True,
                  help="Share of items per pair that may fail to be scored (0: any failure fails the pair).")
    @click.option("-v", "--verbose", is_flag=True, help="Show other libraries' logs and warnings.")
    @click.pass_obj
    def suite_cmd(obj, suite, models, pairs, force, fail_fast, max_failure_rate, verbose):
        """Run SUITE (a built-in name or a YAML list of {benchmark, options})
        on every --model, skipping pairs already in the store."""
        from tapir.bench import create_evaluator, load_suite, preflight, run_suite
        from tapir.errors import ConfigError
        from tapir.store import resolve_db_path

        _verbose(verbose)
        try:  # a wrong suite, name or option: exit 2 before the database is opened
            entries = load_suite(suite)
            extra = parse_options(pairs)
            for entry in entries:
                entry.options = {**entry.options, **extra}
            evaluators = [create_evaluator(entry.benchmark, entry.options) for entry in entries]
            if not resolve_db_path(obj["db"]).exists():  # nothing can be stored yet: check every pair first
                problems = []
                for model in models:
                    for entry, evaluator in zip(entries, evaluators):
                        try:
                            preflight(evaluator, entry.benchmark, model)
                        except ConfigError as exc:
                            problems.append(str(exc))
                if problems:
                    raise ConfigError("\n".join(problems))
        except ConfigError as exc:
            _exit_on(exc, 2)
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

        try:
            results = run_suite(store, entries, list(models), force=force, fail_fast=fail_fast,
                                on_progress=progress, max_failure_rate=max_failure_rate)
        except ConfigError as exc:
            _exit_on(exc, 2)
        counts = {s: sum(r.status == s for r in results) for s in ("ran", "skipped", "failed")}
        click.echo(f"{counts['ran']} ran, {counts['skipped']} skipped, {counts['failed']} failed")
        if counts["failed"]:
            sys.exit(1)

    @cli.command()
    @click.argument("refs", nargs=-1)
    @click.option("--format", "fmt", type=click.Choice(["markdown", "table", "latex", "json", "csv"]),
                  default="markdown", show_default=True, help="latex: the compact table only.")
    @click.option("--full", is_flag=True,
                  help="One row per benchmark run with its settings, judge, subset, n, failures and the delta "
                       "vs base, instead of one row per model.")
    @click.option("--base", "bases", multiple=True,
                  help="Base model for models with no checkpoint record: BASE, or MODEL=BASE; repeatable.")
    @click.option("--benchmark", "benchmarks", multiple=True, help="Only these benchmarks; repeatable.")
    @click.option("--all-metrics", is_flag=True, help="Every stored metric, not only the headline ones (--full).")
    @click.option("--no-delta", is_flag=True, help="Leave out the delta-vs-base view (--full).")
    @click.option("--plot", "plot_path", type=click.Path(dir_okay=False),
                  help="Also write a bar chart (PNG): a panel per benchmark column, a bar per model.")
    @click.pass_obj
    def compare(obj, refs, fmt, full, bases, benchmarks, all_metrics, no_delta, plot_path):
        """Benchmark scores side by side. REFS: run names or ids (a training
        run brings all its checkpoints), study names, checkpoint paths or
        model names (all stored models when none). By default one row per
        model, labelled `backbone · setting · S_r` and ordered so, one column
        per benchmark with mean ± stderr; --full shows every benchmark run
        with its settings, judge, subset, n, failures and delta vs base."""
        from tapir import compare as cmp

        if full and fmt == "latex":
            _exit_on(click.UsageError("--format latex is for the compact table: leave out --full, or use "
                                      "--format markdown|table|csv|json with --full"), 2)
        if plot_path:  # checked before the table is printed: the chart was the part that failed, at the end
            from pathlib import Path

            plot = Path(plot_path)
            if plot.suffix.lower().lstrip(".") not in _PLOT_FORMATS:
                others = ", .".join(sorted(_PLOT_FORMATS - {"png", "pdf", "svg"}))
                _exit_on(click.UsageError(f"--plot {plot_path}: give an image file name ending in "
                                          f".png, .pdf or .svg (or .{others})"), 2)
            if not (plot.parent if str(plot.parent) else Path(".")).is_dir():
                _exit_on(click.UsageError(f"--plot {plot_path}: no folder {plot.parent}; create it first, or "
                                          f"give a path in an existing folder"), 2)
        from tapir.store import open_store

        store = open_store(obj["db"], readonly=True)  # reads only: a missing --db is an error, never created
        try:
            table = cmp.build(store, list(refs), list(bases), all_metrics=all_metrics,
                              benchmarks=list(benchmarks) or None)
        except cmp.UnknownReference as exc:
            _exit_on(exc, 2)
        click.echo(cmp.render(table, fmt, delta=not no_delta, full=full), nl=False)
        if plot_path:
            cmp.plot(table, plot_path)
            click.echo(f"wrote {plot_path}", err=True)
