"""Wall time of the demo (configs/demo.yaml), per stage, as a table.

Runs `tapir distill` into a fresh temporary database and output folder, then
reads the stage timings back from the store. Usage:

    python benchmarks/bench_demo.py [CONFIG]
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import sqlite_utils
import yaml

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    config = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "configs" / "demo.yaml").resolve()
    with tempfile.TemporaryDirectory() as tmp:
        data = yaml.safe_load(config.read_text())
        data["output_dir"] = str(Path(tmp) / "out")
        if data.get("data", {}).get("path"):
            data["data"]["path"] = str((config.parent / data["data"]["path"]).resolve())
        for role in ("classifier",):
            opts = data.get(role, {}).get("options", {})
            if "labels_path" in opts:
                opts["labels_path"] = str((config.parent / opts["labels_path"]).resolve())
        cfg = Path(tmp) / "demo.yaml"
        cfg.write_text(yaml.safe_dump(data))
        db = Path(tmp) / "bench.db"
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
               "LITELLM_LOCAL_MODEL_COST_MAP": "True", "TAPIR_QUIET": "1"}
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "tapir", "--db", str(db), "distill", str(cfg)],
                       check=True, env=env, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - start
        rows = list(sqlite_utils.Database(db).query("select name, round, seconds from stages order by id"))
    print(f"{'stage':<20}{'round':>6}{'seconds':>10}")
    for r in rows:
        print(f"{r['name']:<20}{r['round']:>6}{r['seconds'] or 0:>10.1f}")
    staged = sum(r["seconds"] or 0 for r in rows)
    print(f"{'stages total':<26}{staged:>10.1f}")
    print(f"{'wall (incl. start-up)':<26}{wall:>10.1f}   target < 600 s: {'yes' if wall < 600 else 'NO'}")


if __name__ == "__main__":
    main()
