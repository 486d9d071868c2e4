"""``tapir distill`` (the main job) and ``tapir mfd`` (the MFD distribution)."""

from __future__ import annotations

import json

import click

from tapir.cli.options import SET_OPTION
from tapir.pipeline.counts import counted_note, handled


def stage_table(rows) -> list[str]:
    """The per-stage summary: items ok / failed / reused, calls, tokens, cost, time."""
    lines = [f"{'stage':<24}{'round':>5}  {'status':<9}{'ok':>7}{'failed':>7}{'calls':>7}{'sent':>7}{'tokens':>9}"
             f"{'cost $':>9}{'trunc':>6}{'seconds':>9}"]
    total = 0.0
    maybe = 0
    for r in rows:
        total += r["seconds"] or 0.0
        maybe += r.get("maybe_billed", 0) or 0
        status = "reused" if r.get("reused_from") else r["status"]
        # sent: requests sent for the calls, retried and timed-out attempts included
        lines.append(f"{r['name']:<24}{r['round']:>5}  {status:<9}{r.get('ok', 0):>7}{r.get('failed', 0):>7}"
                     f"{r.get('calls', 0):>7}{r.get('attempts', r.get('calls', 0)):>7}{r.get('tokens', 0):>9}"
                     f"{r.get('cost', 0.0):>9.4f}{r.get('truncated', 0):>6}{(r['seconds'] or 0.0):>9.1f}")
    lines.append(f"{'total':<24}{'':>5}  {'':<9}{'':>7}{'':>7}{'':>7}{'':>7}{'':>9}{'':>9}{'':>6}{total:>9.1f}")
    note = counted_note(r["name"] for r in rows)
    if note:
        lines.append(note)
    if maybe:
        lines.append(f"{maybe} attempt(s) timed out or broke mid-answer: the server may have generated (and billed) "
                     f"them; the cost column counts only answers received")
    return lines


def summary_rows(results) -> list[dict]:
    return [
        {"name": r.step.stage, "round": r.step.round, "status": r.status, "reused_from": r.reused_from,
         "ok": handled(r.step.stage, r.ok, r.failed, r.info or {}), "failed": r.failed,
         "calls": r.calls if r.status != "reused" else 0,
         "tokens": r.tokens if r.status != "reused" else 0, "cost": r.cost if r.status != "reused" else 0.0,
         "attempts": r.attempts if r.status != "reused" else 0,
         "maybe_billed": r.maybe_billed if r.status != "reused" else 0,
         "truncated": r.truncated, "seconds": r.seconds, "key": r.key}
        for r in results
    ]


def _summary(outcome) -> str:
    ctx = outcome.ctx
    results = outcome.results
    failed = sum(r.failed for r in results)
    final = sum(r.final for r in results)  # a re-run would fail them the same way
    retried = failed - final
    head = f"run {ctx.run.id} ({ctx.config.name}) finished" + (
        f" with {failed} failed item(s)" if failed else "")
    if retried:
        head += f": re-run to retry {'them' if not final else f'{retried} of them'}"
    if final:
        head += (f"{',' if retried else ':'} {final} fail the same way on a re-run (the same inputs reproduce them, "
                 f"or their draws are used up; `tapir runs show {ctx.run.id}` gives the reasons and the option "
                 f"that changes them)")
    head += "."
    lines = [head, "", *stage_table(summary_rows(results))]
    if outcome.budget is not None:
        lines += ["", *outcome.budget.lines()]
    lines += ["", f"database:    {ctx.store.path}   (details: tapir runs show {ctx.run.id})",
              f"outputs:     {ctx.out_dir}"]
    from tapir.judge_reads import provenance_text
    from tapir.pipeline.curriculum_notes import curriculum_lines

    notes = curriculum_lines((r.step.stage, r.step.round, r.info) for r in results)
    if notes:
        lines += ["", "curriculum:", *(f"  {n}" for n in notes)]
    judged = [(r.step.round, provenance_text(r.info)) for r in results if r.step.stage == "judge"]
    if any(text for _, text in judged):
        lines += ["", "MFD judgments (how each score was read):"]
        lines += [f"  S{round_}: {text}" for round_, text in judged if text]
    evaluated = [r for r in results if r.step.stage in ("evaluate_base", "evaluate") and "nll" in r.info]
    if evaluated:
        lines += ["", "held-out loss (teacher answers to instructions no round trained on; lower is better):"]
        base = next((r.info["nll"] for r in evaluated if r.step.stage == "evaluate_base"), None)
        for r in evaluated:
            delta = f"  ({r.info['nll'] - base:+.4f} vs base)" if base is not None and r.step.stage == "evaluate" else ""
            lines.append(f"  {r.info['label']:<6} nll {r.info['nll']:.4f}  perplexity {r.info['perplexity']:.2f}  "
                         f"n {r.info['n']}{delta}")
    export = next((r for r in results if r.step.stage == "export"), None)
    if export is not None:
        for name, path in sorted(export.info.get("checkpoints", {}).items()):
            lines.append(f"checkpoint:  {name} -> {path}")
        for key in ("jsonl", "datasets_folder", "mfd_plot"):
            if export.info.get(key):
                lines.append(f"export:      {export.info[key]}")
    return "\n".join(lines)




def register(cli):
    @cli.command()
    @click.argument("config", type=click.Path(dir_okay=False))
    @click.option("--no-retry", is_flag=True, help="Keep failed items failed (default: a re-run retries them).")
    @click.option("--wait", is_flag=True, help="Wait for another process writing this run instead of exiting.")
    @click.option("--dry-run", is_flag=True,
                  help="Check everything and print the plan (stages, reuse, calls, tokens, cost, training steps); "
                       "write nothing, call nothing.")
    @click.option("--over-budget", is_flag=True,
                  help="With --dry-run: print the plan even when its estimated cost is above budget.* "
                       "(by default such a plan is refused, exit 2).")
    @SET_OPTION
    @click.pass_obj
    def distill(obj, config, no_retry, wait, dry_run, over_budget, sets):
        """Run the TAPIR pipeline described by CONFIG (YAML). Everything is
        checked first (exit 2, nothing written). Safe to re-run: stages whose
        inputs are unchanged are reused, failed items are retried, and no LLM
        call is paid twice."""
        from pathlib import Path

        from tapir.config import apply_overrides, read_yaml

        if Path(config).is_file() and apply_overrides(read_yaml(config), list(sets)).get("students"):
            from tapir.cli.study_cmd import print_plan, run_and_print

            if dry_run:  # one plan per student: the study's (tapir study CONFIG --dry-run)
                print_plan(config, obj["db"], None, sets, retry=not no_retry, over_budget_ok=over_budget)
            else:
                run_and_print(config, obj["db"], None, sets, False if no_retry else None)
            return
        if dry_run:
            from tapir.pipeline.dryrun import plan, render
            from tapir.pipeline.preflight import check

            from tapir.budget import plan_over
            from tapir.errors import ConfigError

            checked = check(config, obj["db"], list(sets))
            planned = plan(checked, retry=not no_retry)
            click.echo(render(planned))
            limits = checked.config.budget
            over = plan_over(planned.prices, limits.max_cost_usd, limits.per_role)
            if limits.max_cost_usd is not None or limits.per_role:
                click.echo("\nbudget: " + (", ".join(over) if over else "the plan's estimate fits"))
            if over and not over_budget:
                raise ConfigError(f"{config}: the plan is priced above its budget: {'; '.join(over)}. Raise "
                                  f"budget.max_cost_usd / budget.per_role, shrink the run (data.limit, "
                                  f"curriculum sizes), or pass --over-budget to see the plan anyway (the run "
                                  f"itself stops before the call that would pass the budget).")
            return
        from tapir.pipeline.runner import distill as run_distill

        outcome = run_distill(config, obj["db"], retry=False if no_retry else None, wait=wait,
                              overrides=list(sets))
        click.echo(_summary(outcome))

    @cli.command()
    @click.argument("config", type=click.Path(dir_okay=False))
    @click.option("--no-retry", is_flag=True, help="Keep failed items failed.")
    @click.option("--match-steps", is_flag=True,
                  help="Run the full setting first, then give every other curriculum setting as many optimizer "
                       "steps (curriculum.max_steps) as the full setting's rounds took, so rows are comparable "
                       "at equal compute (full-alpaca is S0, shared, and not re-trained).")
    @SET_OPTION
    @click.pass_obj
    def ablate(obj, config, no_retry, match_steps, sets):
        """Run Table 5's ablations of CONFIG (full-alpaca, seed-alpaca,
        seed-alpaca-rw, direct-expansion, single-round, full) as pipeline
        variants on one database: shared stages (teacher answers, S0,
        judgments) are computed once. Ends with one table: what each setting
        trained (examples, optimizer steps, tokens), its held-out loss
        (evaluation.heldout) and benchmark scores (evaluation.benchmarks, on
        its final checkpoint)."""
        import json as _json
        from pathlib import Path

        from tapir.config import read_yaml
        from tapir.pipeline.variants import ablations, run_variants, table

        data = read_yaml(config)
        from tapir.config import apply_overrides

        data = apply_overrides(data, list(sets)) if sets else data
        results = run_variants(config, ablations(data), "ablation", obj["db"], retry=False if no_retry else None,
                               overrides=list(sets), match_steps=match_steps)
        lines = table(results)
        out = Path(results[-1].outcome.out_dir).parent / "ablation.json"
        out.write_text(_json.dumps([{"setting": r.variant.label, "run_id": r.run_id, "checkpoint": r.checkpoint,
                                     "heldout_nll": r.heldout_nll, "base_nll": r.base_nll,
                                     "examples": r.training.get("examples"), "steps": r.training.get("steps"),
                                     "tokens": r.training.get("tokens"), "rounds": r.training.get("rounds"),
                                     "max_steps": r.max_steps, "benchmarks": r.benchmarks} for r in results],
                                   indent=2))
        click.echo("\n".join(["ablations (Table 5):", *lines, "", f"written: {out}"]))

    @cli.command()
    @click.argument("config", type=click.Path(dir_okay=False))
    @click.option("--round", "round_", default=0, show_default=True, help="Student round (0 = S0).")
    @click.option("--json", "as_json", is_flag=True)
    @SET_OPTION
    @click.pass_obj
    def mfd(obj, config, round_, as_json, sets):
        """Show the MFD distribution of CONFIG's judge stage and what CONFIG's
        seed cut does with it (selected, ties at the cut value, exclusions for
        MFD <= 0), with candidate thresholds on the judge's own scale (the
        range its MFD values take). Works on an edited config whenever its
        judge stage has the same inputs (editing mfd.delta does not change it)."""
        from tapir.pipeline.inspect import engine_without_run
        from tapir.pipeline.mfd import candidate_deltas, describe_cut, distribution, histogram, select_hard
        from tapir.store.scores import scores_by_item

        engine = engine_without_run(config, obj["db"], list(sets))
        store, key, cfg = engine.ctx.store, engine.key_of(("judge", round_)), engine.ctx.config
        mfd = scores_by_item(store, key, "mfd") if key else {}
        if not mfd:
            raise click.ClickException(
                f"no MFD scores for the judge stage (round {round_}) of {config} in {store.path}: run "
                f"`tapir distill {config}` first (an edit upstream of the judge, e.g. of the teacher or the "
                f"trainer, means new judgments)")
        values = sorted(mfd.values())
        stats = distribution(values)
        cut = select_hard(mfd, cfg.mfd, cfg.seed, cfg.curriculum.seed_size)
        candidates = [(d, sum(v > d for v in values)) for d in candidate_deltas(values)]
        if as_json:
            click.echo(json.dumps({"stage_key": key, "round": round_, **stats, "values": values,
                                   "cut": {k: v for k, v in cut.info().items()},
                                   "candidates": [{"delta": d, "kept": k} for d, k in candidates]}))
            return
        click.echo(f"MFD of student S{round_} (judge stage {key}): " + ", ".join(f"{k} {v}" for k, v in stats.items()))
        click.echo(histogram(values))
        click.echo(f"configured cut: {describe_cut(cut.info())}")
        nonpositive = sum(v <= 0 for v in values)
        click.echo(f"MFD <= 0: {nonpositive} of {len(values)} ({nonpositive / len(values):.0%})"
                   + ("" if cfg.mfd.allow_nonpositive else ", never hard (mfd.allow_nonpositive: false)"))
        click.echo(f"candidate deltas on this judge's scale (MFD from {values[0]:.4g} to {values[-1]:.4g}):")
        for delta, kept in candidates:
            click.echo(f"  delta {delta:>8.4g}: {kept} of {len(values)} kept ({kept / len(values):.0%})")
