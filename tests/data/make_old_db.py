"""Write ``tests/data/db-before-scope.sqlite``: a small database as tapir
wrote it before migration ``m009_scope_and_item_fks`` (data rows keyed by
``run_id`` holding stage keys, no foreign keys to ``items``, judge-stage
``judgments.raw`` as a JSON object, benchmark ones as a JSON list).

It was made once, with the code of main at commit 82e9995, and committed;
``tests/test_store_migrate_old.py`` opens it with today's code. Re-running
this script with a newer tapir would write a *migrated* schema, which is
not what the test needs: only re-make it from a checkout of that commit::

    git worktree add /tmp/old 82e9995 && cd /tmp/old
    PYTHONPATH=.:plugins:tests:tests/support HF_HUB_OFFLINE=1 \\
        python /path/to/tests/data/make_old_db.py tests/data/db-before-scope.sqlite

What it holds: one distil run (8 seed items, one curriculum round that
expands 3, the tiny random model from ``tapir_testing`` trained for one
epoch, the scripted teacher of ``tests/pipeline_helpers.py``, a ROUGE
judge), one benchmark result per checkpoint as ``tapir bench`` stores it,
and one MT-Bench-style benchmark run's items, responses and pairwise
judgments written through ``tapir.store.records``.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
for extra in (ROOT, ROOT / "plugins", ROOT / "tests", ROOT / "tests" / "support"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))


def make(target: Path) -> None:
    from pipeline_helpers import SEED_DATA, ScriptPlugin, write_config
    from tapir_testing.models import build_tiny_model

    from tapir.bench import bench_config, model_key, upsert_rows
    from tapir.pipeline.runner import distill
    from tapir.plugins import get_plugin_manager, reset_plugin_manager
    from tapir.roles import Judgment
    from tapir.runs import Run
    from tapir.store import open_store
    from tapir.store.records import JudgmentRow, save_items, save_judgments, save_responses

    os.environ["TAPIR_QUIET"] = "1"
    target = Path(target).resolve()
    if target.exists():
        target.unlink()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        tiny = build_tiny_model(tmp / "tiny-llama")
        reset_plugin_manager()
        get_plugin_manager().register(ScriptPlugin(), name="test-script")
        cfg = write_config(tmp, tiny, name="old-db", data={"path": str(SEED_DATA), "limit": 8},
                           trainer={"name": "hf", "options": {"epochs": 1, "batch_size": 8, "micro_batch_size": 8,
                                                              "max_length": 64, "lr": 1e-3}},
                           curriculum={"rounds": 1, "alpha": 0.3, "alpha_step": 0.2, "expand_per_round": [3]})
        db = tmp / "old.db"
        out = distill(cfg, str(db))
        run_id = out.run.id
        out.store.close()
        store = open_store(db)
        paths = {s["round"]: json.loads(s["info"])["path"]
                 for s in store["stages"].rows_where("run_id = ? and name = 'train'", [run_id])}
        meta = {"judge": "gpt-4-turbo", "judge_mode": "reference", "failures": 0, "data_version": "v1",
                "subset": None}
        for r, path in sorted(paths.items()):
            run = Run.start(store, bench_config("mtbench", path, {}), name=f"bench:mtbench:{path}")
            with run.stage("bench:mtbench"):
                upsert_rows(store, "mtbench", model_key(path), run.id,
                            [{"task": "overall", "metric": "score", "value": 5.0 + r, "stderr": 0.1, "n": 2,
                              "meta": meta}])
                # The benchmark's own rows, as the MT-Bench runner writes them.
                items = [{"id": f"q{i}", "instruction": f"Question {i}?", "output": None, "task_type": "writing",
                          "meta": {"turns": 1}} for i in (1, 2)]
                save_items(store, run.id, items)
                save_responses(store, run.id, "student", "student", [(f"q{i}", 0, f"Answer {i} r{r}", None)
                                                                       for i in (1, 2)])
                save_responses(store, run.id, "baseline", "gpt-4", [(f"q{i}", 0, f"Baseline {i}", None)
                                                                     for i in (1, 2)])
                answers = {(k[0], role): v[0] for role, model in (("student", "student"), ("baseline", "gpt-4"))
                           for k, v in _responses(store, run.id, role, model).items()}
                save_judgments(store, run.id, "pairwise", "gpt-4-turbo", "pairwise", [
                    JudgmentRow(f"q{i}", pos, 0, Judgment(score_a=7.0, score_b=5.0, raw=[f"[[A]] for q{i}"]),
                                answers[(f"q{i}", "student")], answers[(f"q{i}", "baseline")])
                    for i in (1, 2) for pos in ("ab", "ba")])
            run.finish()
        # Checkpoint folders live in the temporary folder; keep their paths
        # (the rows), not the weights.
        store.close()
        reset_plugin_manager()
        import sqlite3

        conn = sqlite3.connect(db)
        conn.execute("pragma wal_checkpoint(truncate)")
        conn.execute("pragma journal_mode = delete")
        conn.execute(f"vacuum into '{target}'")
        conn.close()
    print(target, target.stat().st_size, "bytes")


def _responses(store, run_id, role, model):
    from tapir.store.records import load_responses

    return load_responses(store, run_id, role, model)


if __name__ == "__main__":
    make(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "db-before-scope.sqlite")
