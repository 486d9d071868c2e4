"""``tapir report RUN``: one self-contained HTML file with the paper's
figures for a run, read from the store.

What it shows (each figure is an inline base64 PNG, every number is also in
a table; the page loads nothing from anywhere):

- the run: config summary, and per round the training set (hard / easy
  examples, alpha_r, the hard examples' share of the weight, final loss);
- **task distribution before and after re-sampling** (the paper's Fig. 5):
  per task type the share in D (classified), in the hard seed D_S, and in
  the draws of each ``resample`` round (its info ``per_task``), with the
  target share of the task weights;
- **MFD distribution per round with the seed cut** (Fig. 6): the ``mfd``
  scores of each ``judge`` stage (round 0 is S0; later rounds exist with
  ``curriculum.recompute_mfd``), the cut's threshold and rule from the
  ``seed_cut`` stage;
- **benchmark scores per round** (Fig. 3): rows of ``benchmark_results``
  whose model is a checkpoint of this run (the ``train`` stages' ``path``),
  through :func:`tapir.compare.build`, one line per benchmark column and
  benchmark settings; a note when there are none;
- **the ablation table** (Table 5) when the run belongs to one: see
  :func:`ablation_runs` and :func:`ablation_table`;
- per stage: status, items ok / failed, calls, tokens, cost, answers cut at
  ``max_new_tokens``, seconds; failed items by kind; LLM calls by role.

Read-only: :func:`open_readonly` never creates or migrates a database.
matplotlib is imported only when a figure is drawn; without it the page
still has every table, and says why the figures are missing.
"""

from tapir.report.ablation import (ABLATION_FILE, ABLATION_TAG, _ablation_section, ablation_runs, ablation_table,
                                   load_ablation)
from tapir.report.benchmarks import (LOWER_IS_BETTER, _benchmark_entries, _series_label, benchmark_rounds,
                                     checkpoints_of)
from tapir.report.figures import NO_MATPLOTLIB, _matplotlib, _png, _short
from tapir.report.html import CSS, _e, _figure_html, _table_html, render_html
from tapir.report.page import build_report, write_report
from tapir.report.pieces import Figure, Report, Section, Table
from tapir.report.queries import _by_node, _labels, _scores, _stages, find_run, open_readonly
from tapir.report.sections import (_config_section, _coverage_table, _cut_text, _median, _num, _pct,
                                   mfd_distribution, task_distribution)
from tapir.report.stages import stage_section

__all__ = [
    "ABLATION_FILE", "ABLATION_TAG", "CSS", "LOWER_IS_BETTER", "NO_MATPLOTLIB", "Figure", "Report", "Section", "Table",
    "ablation_runs", "ablation_table", "benchmark_rounds", "build_report", "checkpoints_of", "find_run",
    "load_ablation", "mfd_distribution", "open_readonly", "render_html", "stage_section", "task_distribution",
    "write_report",
]
