"""Start-up time of the CLI: ``tapir --help`` must answer in under 1 s.

Times each command as a fresh subprocess (median of N runs, after one
warm-up run so the OS file cache is hot) and compares it with the floor,
``python -c pass``, and with what an eager heavy import would cost,
``python -c "import torch"``. Then checks, in a fresh interpreter, that
importing tapir.cli and loading every plugin imports none of the heavy
libraries (tests/test_cli_core.py::test_startup_imports_nothing_heavy is the
fast test of the same thing).

    python benchmarks/bench_startup.py [--runs 10]

Exit status 1 when ``tapir --help`` takes 1 s or more, or when a heavy
library is imported at start-up.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

HEAVY = ("torch", "transformers", "litellm", "vllm", "lm_eval", "numpy")
LIMIT_S = 1.0


def tapir_command() -> list[str]:
    script = Path(sys.executable).with_name("tapir")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "from tapir.cli import main; main()"]


def env() -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if k not in ("TAPIR_PLUGINS", "TAPIR_TRACE_HOOKS")}
    e["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    return e


def time_command(cmd: list[str], runs: int, cwd: str) -> list[float]:
    subprocess.run(cmd, capture_output=True, cwd=cwd, env=env(), check=True)  # warm-up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(cmd, capture_output=True, cwd=cwd, env=env(), check=True)
        times.append(time.perf_counter() - start)
    return times


HEAVY_CHECK = textwrap.dedent(f"""
    import sys, json
    from tapir.cli import _add_commands, main
    from tapir.plugins import get_plugin_manager
    from tapir.cli.plugins_cmd import plugin_rows
    pm = get_plugin_manager()
    _add_commands()
    plugin_rows()
    for args in (["--help"], ["plugins"], ["models", "--json"]):
        try:
            main(args)
        except SystemExit:
            pass
    print(json.dumps({{"heavy": sorted(m for m in {HEAVY!r} if m in sys.modules),
                      "plugins": sorted(pm.infos), "modules": len(sys.modules)}}))
""")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()

    print(f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs; "
          f"median of {args.runs} runs (after a warm-up run)\n")
    with tempfile.TemporaryDirectory() as cwd:
        cases = [
            ("python -c pass", [sys.executable, "-c", "pass"]),
            ("tapir --help", tapir_command() + ["--help"]),
            ("tapir plugins", tapir_command() + ["plugins"]),
        ]
        if importlib.util.find_spec("torch") is not None:
            cases.append(('python -c "import torch"', [sys.executable, "-c", "import torch"]))
        results = {}
        for label, cmd in cases:
            times = time_command(cmd, args.runs, cwd)
            results[label] = statistics.median(times)
            print(f"{label:<28} median {results[label]:6.3f} s   min {min(times):6.3f}   max {max(times):6.3f}")

        floor = results["python -c pass"]
        help_s = results["tapir --help"]
        print()
        print(f"tapir --help / python -c pass      = {help_s / floor:5.1f}x")
        print(f"tapir plugins / python -c pass     = {results['tapir plugins'] / floor:5.1f}x")
        if 'python -c "import torch"' in results:
            torch_s = results['python -c "import torch"']
            print(f"tapir --help / python -c 'import torch' = {help_s / torch_s:5.2f}x "
                  f"(import torch alone: {torch_s:.2f} s)")

        ok_time = help_s < LIMIT_S
        print(f"\n{'PASS' if ok_time else 'FAIL'}: tapir --help median {help_s:.3f} s "
              f"{'<' if ok_time else '>='} {LIMIT_S:.0f} s")

        proc = subprocess.run([sys.executable, "-c", HEAVY_CHECK], capture_output=True, text=True, cwd=cwd,
                              env=env())
        if proc.returncode != 0:
            print(f"FAIL: the import check crashed:\n{proc.stderr}")
            return 1
        check = json.loads(proc.stdout.strip().splitlines()[-1])
        ok_imports = not check["heavy"]
        print(f"{'PASS' if ok_imports else 'FAIL'}: importing tapir.cli and loading {len(check['plugins'])} plugins "
              f"({', '.join(check['plugins'])}) imports "
              f"{'none of ' + ', '.join(HEAVY) if ok_imports else ', '.join(check['heavy'])} "
              f"({check['modules']} modules in sys.modules)")
    return 0 if ok_time and ok_imports else 1


if __name__ == "__main__":
    sys.exit(main())
