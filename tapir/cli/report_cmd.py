"""``tapir report RUN``: one self-contained HTML file with the figures and
tables of a run (see :mod:`tapir.report`). Read-only: a missing database is
an error, never created."""

from __future__ import annotations

import click


def check_output(output: str | None, db: str | None) -> None:
    """``-o`` must not name the database being read: the HTML replaced it."""
    from pathlib import Path

    from tapir.errors import ConfigError
    from tapir.store.db import resolve_db_path

    if output is None:
        return
    database = resolve_db_path(db).resolve()
    target = Path(output).expanduser().resolve()
    if target in (database, Path(f"{database}-wal"), Path(f"{database}-shm")):
        raise ConfigError(f"-o {output} is the database the report is read from ({database}); writing the HTML "
                          f"there would replace it. Give another file name, e.g. -o report.html")


def register(cli):
    @cli.command()
    @click.argument("run_id", metavar="RUN")
    @click.option("-o", "--output", "output", type=click.Path(dir_okay=False), default=None,
                  help="Where to write the HTML file (default report-<run id>.html).")
    @click.option("--ablation", "ablation_file", type=click.Path(dir_okay=False, exists=True), default=None,
                  help="A JSON file of (setting, run id) pairs for the ablation table (default: found from the "
                       "run's output folder or runs named <name>/ablation:<setting>).")
    @click.pass_obj
    def report(obj, run_id, output, ablation_file):
        """Write the HTML report of RUN (id, id prefix or name): task
        distribution before and after re-sampling (Fig. 5), MFD per round
        with the seed cut (Fig. 6), benchmark scores per round (Fig. 3), the
        ablation table (Table 5) and per-stage time, calls, tokens, cost and
        failures."""
        from tapir.report import load_ablation, open_readonly, write_report

        check_output(output, obj["db"])
        store = open_readonly(obj["db"])
        try:
            pairs = load_ablation(ablation_file) if ablation_file else None
            path = write_report(store, run_id, output, ablation=pairs)
        finally:
            store.close()
        click.echo(f"report: {path}")
