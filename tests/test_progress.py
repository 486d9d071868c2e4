"""Progress that tells the truth: a bar per item with count, rate and ETA
(plain lines off a terminal, throttled, with a final count), TAPIR_QUIET;
other libraries' bars, logs and FutureWarnings silenced by quiet_libraries
unless verbose (checked in a subprocess on the real libraries)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap

import pytest

from tapir.progress import Bar, format_rate, format_seconds, quiet_libraries


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_format_seconds_and_rate():
    assert format_seconds(42.4) == "42s"
    assert format_seconds(185) == "3m05s"
    assert format_seconds(3720) == "1h02m"
    assert format_seconds(None) == "?"
    assert format_rate(10, 4.0, "item") == "2.5 item/s"
    assert format_rate(2, 10.0, "item") == "5.0 s/item"
    assert format_rate(0, 1.0, "item") == "? item/s"


def test_plain_bar_counts_rate_and_eta(monkeypatch):
    monkeypatch.delenv("TAPIR_QUIET", raising=False)
    clock, out = Clock(), io.StringIO()
    bar = Bar("teacher answers", 10, stream=out, every=5.0, clock=clock)
    clock.now += 2
    bar.update(2)  # 2 s in: below the interval, nothing written
    assert out.getvalue() == ""
    clock.now += 4
    bar.update(2)  # 6 s, 4 of 10 -> 1.5 s each, 6 left -> ETA 9 s
    assert out.getvalue().splitlines() == ["   teacher answers: 4/10 items (40%), 1.5 s/item, 6s elapsed, ETA 9s"]
    assert bar.eta() == pytest.approx(9.0)
    clock.now += 6
    bar.update(6)  # 12 s, done
    bar.close()
    lines = out.getvalue().splitlines()
    assert lines[-1] == "   teacher answers: 10/10 items (100%), 1.2 s/item, 12s elapsed"
    assert len(lines) == 2  # the final count once, not twice


def test_plain_bar_quiet_when_fast_and_with_tapir_quiet(monkeypatch):
    monkeypatch.delenv("TAPIR_QUIET", raising=False)
    clock, out = Clock(), io.StringIO()
    bar = Bar("fast", 3, stream=out, every=5.0, clock=clock)
    bar.update(3)
    bar.close()
    assert out.getvalue() == ""  # done before the first interval: the stage line says it
    monkeypatch.setenv("TAPIR_QUIET", "1")
    out = io.StringIO()
    bar = Bar("quiet", 3, stream=out, every=0.0, clock=clock)
    clock.now += 10
    bar.update(3)
    bar.close()
    assert out.getvalue() == ""


def test_bar_moves_per_item_through_the_cache(tmp_path, monkeypatch):
    """A batch reports each item as it finishes: the bar counts every one."""
    from tapir.cache import CachedBackend
    from tapir.roles import Completion, GenerationParams, GenerationRequest
    from tapir.store import open_store

    class OneByOne:
        model_id = "fake:one"

        def generate(self, requests, on_result=None):
            for i, _ in enumerate(requests):
                c = Completion(text=str(i))
                if on_result:
                    on_result(i, c)
            return []

    monkeypatch.delenv("TAPIR_QUIET", raising=False)
    clock, out = Clock(), io.StringIO()
    bar = Bar("items", 5, stream=out, every=0.0, clock=clock)
    seen = []

    def on_result(i, c):
        clock.now += 1
        bar.update()
        seen.append(bar.done)

    store = open_store(tmp_path / "c.db")
    CachedBackend(OneByOne(), store).generate(
        [GenerationRequest([{"role": "user", "content": f"q{i}"}], GenerationParams()) for i in range(5)],
        on_result=on_result)
    assert seen == [1, 2, 3, 4, 5]
    assert [line.split(": ")[1].split(" ")[0] for line in out.getvalue().splitlines()] == \
        ["1/5", "2/5", "3/5", "4/5", "5/5"]
    # un-timed calls get their own latency (time since the previous result), not the batch's running total
    latencies = [r[0] for r in store.execute("select latency_s from llm_calls order by id")]
    assert len(latencies) == 5 and all(x is not None and x < 1.0 for x in latencies)
    store.close()


_NOISE = textwrap.dedent("""
    import os, sys, warnings
    if sys.argv[1] == "quiet":
        from tapir.progress import quiet_libraries
        quiet_libraries(verbose=False)
    import datasets
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(sys.argv[2])
    model.save_pretrained(sys.argv[3])
    datasets.Dataset.from_dict({"a": list(range(50))}).save_to_disk(sys.argv[3] + "-ds")
    warnings.warn("old API", FutureWarning)
    print("done")
""")


@pytest.mark.parametrize("mode", ["quiet", "verbose"])
def test_quiet_libraries_silences_real_library_noise(tiny_model, tmp_path, mode):
    from tapir.progress import _QUIET_ENV  # set in this process by any earlier in-process run

    env = {k: v for k, v in os.environ.items()
           if k not in ("TQDM_DISABLE", "TAPIR_VERBOSE", "TAPIR_QUIET", *_QUIET_ENV)}
    proc = subprocess.run([sys.executable, "-c", _NOISE, mode, str(tiny_model), str(tmp_path / "saved")],
                          capture_output=True, text=True, env=env, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "done"
    noise = ("Loading weights", "Writing model shards", "Saving the dataset", "FutureWarning")
    if mode == "quiet":
        assert [n for n in noise if n in proc.stderr] == [], proc.stderr[-2000:]
    else:  # without it the same script is noisy, so the check above can fail
        assert all(n in proc.stderr for n in ("Loading weights", "Saving the dataset", "FutureWarning")), \
            proc.stderr[-2000:]


def test_quiet_libraries_is_not_applied_on_import_and_respects_verbose(monkeypatch):
    code = "import os, tapir, tapir.progress, tapir.cli; print(os.environ.get('HF_HUB_DISABLE_PROGRESS_BARS'))"
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_DISABLE_PROGRESS_BARS"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert out.stdout.strip() == "None"  # importing tapir changes nothing
    monkeypatch.setenv("TAPIR_VERBOSE", "1")
    assert quiet_libraries() is False  # -v / TAPIR_VERBOSE: nothing silenced
