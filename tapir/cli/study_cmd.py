"""``tapir study CONFIG`` (students x settings x benchmarks as one named
study) and ``tapir study-report NAME`` (its one-page HTML report)."""

from __future__ import annotations

import click

from tapir.cli.options import SET_OPTION

SETTINGS_OPTION = click.option(
    "--settings", default=None, metavar="NAME,...",
    help="Table 5 settings to run per student (full-alpaca, seed-alpaca, seed-alpaca-rw, direct-expansion, "
         "single-round, full; 'all' for every one). Default: full (TAPIR itself).")


def print_plan(config, db, settings, sets, retry: bool = True, over_budget_ok: bool = False) -> None:
    from tapir.errors import ConfigError
    from tapir.study import over_budget, plan_study, render_plan

    plans = plan_study(config, db, settings, list(sets), retry=retry)
    click.echo(render_plan(plans))
    over = over_budget(plans)
    if over and not over_budget_ok:
        raise ConfigError(f"{config}: the plan is priced above its budget: {'; '.join(over)}. Raise "
                          f"budget.max_cost_usd / budget.per_role (each run has its own), shrink the study "
                          f"(students, --settings, data.limit), or pass --over-budget to see the plan anyway.")
    if over:
        click.echo("\nbudget: " + "; ".join(over))


def run_and_print(config, db, settings, sets, retry) -> None:
    from tapir.study import result_table, run_study

    result = run_study(config, db, settings, list(sets), retry=retry)
    click.echo("\n".join(result_table(result)))
    click.echo(f"\nreport: tapir study-report {result.name}")


def register(cli):
    @cli.command()
    @click.argument("config", type=click.Path(dir_okay=False))
    @SETTINGS_OPTION
    @click.option("--dry-run", is_flag=True,
                  help="Check every run and print the plan per student and setting (stages run and reused, "
                       "calls, tokens, training steps, price) and a total; write nothing, call nothing.")
    @click.option("--over-budget", is_flag=True,
                  help="With --dry-run: print the plan even when a run's estimated cost is above its budget.* "
                       "(by default such a plan is refused, exit 2).")
    @click.option("--no-retry", is_flag=True, help="Keep failed items failed (default: a re-run retries them).")
    @SET_OPTION
    @click.pass_obj
    def study(obj, config, settings, dry_run, over_budget, no_retry, sets):
        """Run CONFIG as a study: every student (``students:``, or the one
        ``student:``) in every setting (--settings), each evaluated on
        evaluation.benchmarks, as runs of one database named after the
        config's ``study:`` (or ``name``). Stages that do not depend on the
        student or the setting are computed once. Ends with one table; the
        page is ``tapir study-report NAME``."""
        if dry_run:
            print_plan(config, obj["db"], settings, sets, retry=not no_retry, over_budget_ok=over_budget)
            return
        run_and_print(config, obj["db"], settings, sets, False if no_retry else None)

    @cli.command("study-report")
    @click.argument("name")
    @click.option("-o", "--output", "output", type=click.Path(dir_okay=False), default=None,
                  help="Where to write the HTML file (default study-<name>.html).")
    @click.pass_obj
    def study_report(obj, name, output):
        """Write the HTML report of study NAME: backbones x benchmarks
        (Tables 2/3), settings x benchmarks with what each trained (Table 5),
        scores per round per backbone (Fig. 3), each run's task and MFD
        figures (Figs. 5, 6), the template and judge behind every number,
        and what failed."""
        from tapir.cli.report_cmd import check_output
        from tapir.report import open_readonly
        from tapir.studyreport import write_study_report

        check_output(output, obj["db"])
        store = open_readonly(obj["db"])
        try:
            path = write_study_report(store, name, output)
        finally:
            store.close()
        click.echo(f"report: {path}")
