"""The lm-eval runner end to end on the tiny model with local task YAMLs
(tests/data/lmeval_tasks), offline.

The tasks are built so that their scores are known: in tapir_mc12 the right
answer is the shortest choice for 9 of 12 questions and the longest for 3,
and a near-uniform random model prefers the choice with fewest tokens, so
acc = 9/12; in tapir_gen4 the answer filter can never match 2 generated
tokens, so every answer is "[invalid]" and the 2 of 4 items whose target is
"[invalid]" match: exact_match = 0.5.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest

pytest.importorskip("lm_eval")

from tapir.bench import bench_run_id, run_benchmark  # noqa: E402
from tapir.errors import TapirError  # noqa: E402

TASKS = Path(__file__).parent / "data" / "lmeval_tasks"
MC = str(TASKS / "tapir_mc12.yaml")
GEN = str(TASKS / "tapir_gen4.yaml")


def _by_key(rows):
    return {(r["task"], r["metric"]): r for r in rows}


def test_lmeval_end_to_end_matches_simple_evaluate(store, tiny_model, tmp_path, monkeypatch):
    import lm_eval
    from lm_eval.tasks import TaskManager

    monkeypatch.chdir(tmp_path)  # data files are found next to the YAML, not from the cwd
    options = {"tasks": [MC, GEN], "batch_size": 4}
    rows = run_benchmark(store, "lmeval", str(tiny_model), options)
    got = _by_key(rows)
    assert set(got) == {("tapir_mc12", "acc"), ("tapir_mc12", "acc_norm"), ("tapir_gen4", "exact_match,get-answer")}

    acc = got[("tapir_mc12", "acc")]
    assert acc["value"] == 0.75 and acc["n"] == 12
    assert acc["stderr"] == pytest.approx(math.sqrt(0.75 * 0.25 / 11))  # sample std / sqrt(n)
    em = got[("tapir_gen4", "exact_match,get-answer")]
    assert em["value"] == 0.5 and em["n"] == 4
    assert em["stderr"] == pytest.approx(math.sqrt(1 / 3) / 2)

    meta = acc["meta"]
    assert meta["lm_eval_version"] == lm_eval.__version__
    assert meta["task_version"] == 1.0 and em["meta"]["task_version"] == 2.0
    assert meta["n_shot"] == 0 and meta["n_samples"] == {"original": 12, "effective": 12}
    assert meta["primary"] is True and got[("tapir_mc12", "acc_norm")]["meta"]["primary"] is False
    assert em["meta"]["primary"] is True and em["meta"]["filter"] == "get-answer"
    assert meta["config"]["model_args"]["dtype"] == "float32" and meta["config"]["device"] == "cpu"
    assert meta["run_id"] == bench_run_id("lmeval", str(tiny_model), options)
    assert meta["task_config"]["dataset_kwargs"]["data_files"]["test"] == "mc12.jsonl"

    # The benchmark-row contract: no judge, no failures, a data version, the full set.
    for row in rows:
        m = row["meta"]
        assert (m["judge"], m["judge_mode"], m["failures"], m["failure_reasons"], m["failure_example"],
                m["subset"]) == (None, "reference", 0, {}, None, None)
    mc_digest = hashlib.sha256((TASKS / "mc12.jsonl").read_bytes()).hexdigest()[:12]
    assert meta["data_version"] == f"lm_eval {lm_eval.__version__}, tapir_mc12 v1.0, json sha256:{mc_digest}"

    # Parity: the same run straight through lm-eval's API gives the same numbers,
    # every metric and every stderr, exactly.
    monkeypatch.chdir(TASKS)
    direct = lm_eval.simple_evaluate(
        model="hf", model_args={"pretrained": str(tiny_model), "dtype": "float32"}, tasks=["tapir_mc12", "tapir_gen4"],
        task_manager=TaskManager(include_path=str(TASKS), include_defaults=False), device="cpu", batch_size=4,
        log_samples=False,
    )["results"]
    compared = 0
    for task, entry in direct.items():
        for key, value in entry.items():
            metric, sep, filt = key.partition(",")
            if not sep or "_stderr" in metric:
                continue
            row = got[(task, metric if filt == "none" else key)]
            assert row["value"] == value, (task, key)
            assert row["stderr"] == entry[f"{metric}_stderr,{filt}"], (task, key)
            compared += 2
    assert compared == 6 == 2 * len(rows)  # 3 metrics and their 3 stderrs, identical

    # results.json next to the request cache, in the run's output folder.
    out = Path(meta["output_dir"])
    assert out == tmp_path / "tapir-out" / "bench" / meta["run_id"]
    saved = json.loads((out / "results.json").read_text())
    assert saved["results"]["tapir_mc12"]["acc_norm,none"] == direct["tapir_mc12"]["acc_norm,none"]


def test_rerun_uses_store_and_force_scores_everything_again(store, tiny_model, monkeypatch):
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from sqlitedict import SqliteDict

    options = {"tasks": [MC, GEN], "batch_size": 4, "limit": 6}
    first = run_benchmark(store, "lmeval", str(tiny_model), options)
    cache = Path(first[0]["meta"]["output_dir"]) / "lm-eval-cache_rank0.db"
    with SqliteDict(str(cache)) as d:
        assert len(d) == 6 * 4 + 4  # 4 choices per question, 4 generations
    assert {r["meta"]["subset"] for r in first} == {"limit=6"}

    def boom(*args, **kwargs):
        raise AssertionError("must not run")

    # Done and stored: lm-eval is not even called.
    monkeypatch.setattr(lm_eval, "simple_evaluate", boom)
    assert run_benchmark(store, "lmeval", str(tiny_model), options) == first
    monkeypatch.undo()
    # Forced: the run's request cache is deleted, every request is scored again (and cached anew).
    seen = []
    real_tokens, real_generate = HFLM._loglikelihood_tokens, HFLM.generate_until

    def count_ll(self, requests, *args, **kwargs):
        seen.append(("ll", len(requests)))
        return real_tokens(self, requests, *args, **kwargs)

    def count_gen(self, requests, *args, **kwargs):
        seen.append(("gen", len(requests)))
        return real_generate(self, requests, *args, **kwargs)

    monkeypatch.setattr(HFLM, "_loglikelihood_tokens", count_ll)
    monkeypatch.setattr(HFLM, "generate_until", count_gen)
    again = run_benchmark(store, "lmeval", str(tiny_model), options, force=True)
    assert seen == [("ll", 24), ("gen", 4)]
    assert [(r["task"], r["metric"], r["value"], r["stderr"]) for r in again] == [
        (r["task"], r["metric"], r["value"], r["stderr"]) for r in first]
    with SqliteDict(str(cache)) as d:
        assert len(d) == 6 * 4 + 4
    assert store["benchmark_results"].count == 3


def test_crash_resumes_from_cached_requests(store, tiny_model, monkeypatch):
    from lm_eval.models.huggingface import HFLM

    options = {"tasks": [MC], "batch_size": 4}
    real_call = HFLM._model_call
    calls = {"n": 0}

    def crash_on_third(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("simulated crash")
        return real_call(self, *args, **kwargs)

    monkeypatch.setattr(HFLM, "_model_call", crash_on_third)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_benchmark(store, "lmeval", str(tiny_model), options)
    run_id = bench_run_id("lmeval", str(tiny_model), options)
    assert store["runs"].get(run_id)["status"] == "failed"

    seen = []
    real_tokens = HFLM._loglikelihood_tokens

    def count_requests(self, requests, *args, **kwargs):
        seen.append(len(requests))
        return real_tokens(self, requests, *args, **kwargs)

    monkeypatch.setattr(HFLM, "_model_call", real_call)
    monkeypatch.setattr(HFLM, "_loglikelihood_tokens", count_requests)
    rows = run_benchmark(store, "lmeval", str(tiny_model), options)
    assert seen == [48 - 2 * 4]  # the two batches scored before the crash came from the cache
    assert _by_key(rows)[("tapir_mc12", "acc")]["value"] == 0.75


def test_group_rows_and_fewshot(store, tiny_model):
    rows = run_benchmark(store, "lmeval", str(tiny_model),
                         {"tasks": [str(TASKS / "tapir_group.yaml")], "num_fewshot": 2, "limit": 4})
    got = _by_key(rows)
    group = got[("tapir_group", "acc")]
    assert group["meta"]["group"] is True and group["meta"]["primary"] is True
    assert group["meta"]["subtasks"] == ["tapir_mc12", "tapir_gen4"]
    assert group["value"] == got[("tapir_mc12", "acc")]["value"] and group["n"] == 4
    assert got[("tapir_mc12", "acc")]["meta"]["primary"] is False  # a member, not the headline
    assert got[("tapir_mc12", "acc")]["meta"]["n_shot"] == 2
    assert got[("tapir_gen4", "exact_match,get-answer")]["meta"]["n_shot"] == 2


def test_presets_and_task_specs(tmp_path):
    from lm_eval.tasks import TaskManager

    from tapir_lmeval.tasks import TaskSpec, load_tasks, task_specs

    specs, presets = task_specs({"preset": "leaderboard-v1"})
    assert presets == ["leaderboard-v1"]
    assert [(s.spec, s.num_fewshot, s.primary) for s in specs] == [
        ("arc_challenge", 25, ("acc_norm",)), ("hellaswag", 10, ("acc_norm",)), ("mmlu", 5, ("acc",)),
        ("truthfulqa_mc2", 0, ("acc",)), ("winogrande", 5, ("acc",)), ("gsm8k", 5, ("exact_match,strict-match",))]
    specs, presets = task_specs({"tasks": "leaderboard, arc_easy"})
    assert presets == ["leaderboard"] and [(s.spec, s.primary) for s in specs] == [("leaderboard", ()),
                                                                                   ("arc_easy", None)]
    with pytest.raises(TapirError, match="needs tasks.*leaderboard-v1"):
        task_specs({})
    with pytest.raises(TapirError, match="task file not found"):
        task_specs({"tasks": ["missing.yaml"]})

    # A preset's few-shot count reaches every task object it builds.
    tm = TaskManager(include_path=str(TASKS), include_defaults=False)
    objects, primary = load_tasks(tm, [TaskSpec(MC, 3, ("acc",))])
    assert [o.task_name for o in objects] == ["tapir_mc12"] and objects[0].config.num_fewshot == 3
    assert primary == {"tapir_mc12": ("acc",)}
    with pytest.raises(TapirError, match="unknown lm-eval task 'tapir_mc21'.*leaderboard-v1.*such as: tapir_mc12"):
        load_tasks(tm, [TaskSpec("tapir_mc21")])


def test_model_resolution(tiny_model, tmp_path, monkeypatch, pm):
    import tapir_hf.embedded

    from tapir_lmeval.models import lm_spec, weights_location

    assert weights_location(str(tiny_model)) == (str(tiny_model.resolve()), None, "folder")
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(tiny_model)}))
    assert weights_location(str(adapter)) == (str(tiny_model.resolve()), str(adapter.resolve()), "adapter")
    spec = lm_spec(str(adapter), {"device": "cpu"})
    assert (spec.model_type, spec.model_args, spec.device) == (
        "hf", {"pretrained": str(tiny_model.resolve()), "dtype": "float32", "peft": str(adapter.resolve())}, "cpu")

    monkeypatch.setattr(tapir_hf.embedded, "embedded_model_path", lambda name: tmp_path / f"conv-{name}")
    assert weights_location("smollm2-135m-instruct") == (
        str(tmp_path / "conv-embedded:smollm2-135m-instruct"), None, "embedded")
    assert weights_location(f"hf:{tiny_model}")[0] == str(tiny_model.resolve())
    assert weights_location("HuggingFaceTB/SmolLM2-135M") == ("HuggingFaceTB/SmolLM2-135M", None, "hub")
    with pytest.raises(TapirError, match="lm-eval needs model weights"):
        weights_location("gpt-4o-mini")
    spec = lm_spec(str(tiny_model), {"device": "cpu", "dtype": "bfloat16", "model_args": {"revision": "x"}})
    assert spec.model_args == {"pretrained": str(tiny_model.resolve()), "dtype": "bfloat16", "revision": "x"}
    with pytest.raises(TapirError, match="backend must be one of hf, vllm"):
        lm_spec(str(tiny_model), {"backend": "ollama"})
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        with pytest.raises(TapirError, match="backend=vllm needs vllm installed"):
            lm_spec(str(tiny_model), {"backend": "vllm"})


def test_unknown_option_is_refused_before_anything_is_written(store, tiny_model):
    from tapir.errors import ConfigError

    with pytest.raises(ConfigError, match=r"unknown option 'taks'. Did you mean 'tasks'\? Allowed: .*preset"):
        run_benchmark(store, "lmeval", str(tiny_model), {"taks": [MC]})
    with pytest.raises(ConfigError, match="option 'limit': Input should be greater than 0"):
        run_benchmark(store, "lmeval", str(tiny_model), {"tasks": [MC], "limit": 0})
    assert store["runs"].count == 0


def test_preflight_catches_bad_tasks_and_models_before_a_run_row(store, tiny_model, tmp_path):
    from tapir.bench import PreflightFailed

    broken = tmp_path / "broken.yaml"
    broken.write_text("task: tapir_broken\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
                      "    test: missing.jsonl\ntest_split: test\noutput_type: multiple_choice\n"
                      "doc_to_text: q\ndoc_to_choice: [a, b]\ndoc_to_target: 0\n")
    with pytest.raises(PreflightFailed, match="lmeval: could not load the tasks: FileNotFoundError"):
        run_benchmark(store, "lmeval", str(tiny_model), {"tasks": [str(broken)]})
    with pytest.raises(PreflightFailed, match="lmeval task file not found: missing.yaml"):
        run_benchmark(store, "lmeval", str(tiny_model), {"tasks": ["missing.yaml"]})
    with pytest.raises(PreflightFailed, match="lm-eval needs model weights"):
        run_benchmark(store, "lmeval", "gpt-4o-mini", {"tasks": [MC]})
    with pytest.raises(PreflightFailed, match="lmeval needs tasks"):
        run_benchmark(store, "lmeval", str(tiny_model), {})
    assert store["runs"].count == 0 and store["stages"].count == 0


def test_rows_from_results_headlines_and_stderr():
    """Leaderboard presets' headline metrics, on a results dict shaped like lm-eval's."""
    from tapir_lmeval.presets import primary_metrics
    from tapir_lmeval.results import rows_from_results

    results = {
        "results": {
            "leaderboard": {"alias": "leaderboard", "acc,none": 0.3, "acc_stderr,none": 0.01,
                            "acc_norm,none": 0.4, "acc_norm_stderr,none": 0.02, "sample_count": {"acc,none": 900}},
            "leaderboard_bbh": {"alias": " - bbh", "acc_norm,none": 0.35, "acc_norm_stderr,none": 0.03,
                                "sample_count": {"acc_norm,none": 500}},
            "leaderboard_bbh_snarks": {"alias": "  - snarks", "acc_norm,none": 0.5, "acc_norm_stderr,none": "N/A"},
            "leaderboard_ifeval": {"prompt_level_strict_acc,none": 0.2, "prompt_level_strict_acc_stderr,none": 0.1,
                                   "inst_level_strict_acc,none": 0.3, "inst_level_strict_acc_stderr,none": "N/A",
                                   "prompt_level_loose_acc,none": 0.25},
            "gsm8k": {"exact_match,strict-match": 0.1, "exact_match_stderr,strict-match": 0.05,
                      "exact_match,flexible-extract": 0.2, "exact_match_stderr,flexible-extract": 0.06},
        },
        "groups": {"leaderboard": {}, "leaderboard_bbh": {}},
        "group_subtasks": {"leaderboard": ["leaderboard_bbh", "leaderboard_ifeval"],
                           "leaderboard_bbh": ["leaderboard_bbh_snarks"]},
        "versions": {"leaderboard_bbh_snarks": 1.0, "gsm8k": 3.0},
        "n-shot": {"leaderboard_bbh_snarks": 3, "gsm8k": 5},
        "n-samples": {"leaderboard_bbh_snarks": {"original": 250, "effective": 250},
                      "leaderboard_ifeval": {"original": 541, "effective": 541},
                      "gsm8k": {"original": 1319, "effective": 100}},
        "config": {"model": "hf", "batch_size": 8, "limit": 100, "pretty_env_info": "left out"},
        "lm_eval_version": "0.4.13",
    }
    primary = {"leaderboard": (), "gsm8k": ("exact_match,strict-match",)}
    primary.update(primary_metrics("leaderboard"))
    rows = rows_from_results(results, primary, {"preset": "leaderboard"})
    table = {(r["task"], r["metric"]): (r["value"], r["stderr"], r["n"], r["meta"]["primary"]) for r in rows}
    assert table == {
        ("leaderboard", "acc"): (0.3, 0.01, 900, False),
        ("leaderboard", "acc_norm"): (0.4, 0.02, None, False),  # no sample count for this metric or sample_len
        ("leaderboard_bbh", "acc_norm"): (0.35, 0.03, 500, True),
        ("leaderboard_bbh_snarks", "acc_norm"): (0.5, None, 250, False),
        ("leaderboard_ifeval", "prompt_level_strict_acc"): (0.2, 0.1, 541, True),
        ("leaderboard_ifeval", "inst_level_strict_acc"): (0.3, None, 541, True),
        ("leaderboard_ifeval", "prompt_level_loose_acc"): (0.25, None, 541, False),
        ("gsm8k", "exact_match,strict-match"): (0.1, 0.05, 100, True),
        ("gsm8k", "exact_match,flexible-extract"): (0.2, 0.06, 100, False),
    }
    snarks = next(r for r in rows if r["task"] == "leaderboard_bbh_snarks")["meta"]
    assert (snarks["task_version"], snarks["n_shot"], snarks["group"], snarks["preset"]) == (1.0, 3, False,
                                                                                            "leaderboard")
    assert snarks["config"] == {"model": "hf", "batch_size": 8, "limit": 100}
    lb = next(r for r in rows if r["task"] == "leaderboard")["meta"]
    assert lb["group"] is True and lb["subtasks"] == ["leaderboard_bbh", "leaderboard_ifeval"]


def test_chat_template_and_samples(store, tiny_model):
    rows = run_benchmark(store, "lmeval", str(tiny_model),
                         {"tasks": [MC], "limit": 2, "apply_chat_template": "on", "log_samples": True})
    meta = rows[0]["meta"]
    assert meta["apply_chat_template"] is True and meta["n_samples"]["effective"] == 2
    samples = [json.loads(line) for line in (Path(meta["output_dir"]) / "samples_tapir_mc12.jsonl").open()]
    assert len(samples) == 2
    context, continuation = samples[0]["arguments"][0]
    assert continuation.startswith("The quick brown fox")
    assert context.startswith("<|im_start|>user\nQuestion: What colour is the sky?")


def test_progress_shown_and_git_noise_silenced_unless_verbose(store, tiny_model, tmp_path, monkeypatch, capfd):
    """Outside a git repository lm-eval's git call prints `fatal: not a git
    repository`; tapir silences it (and other libraries' logs) unless
    TAPIR_VERBOSE, and says what each phase does."""
    import subprocess

    outside = tmp_path / "not-a-repo"
    outside.mkdir()
    monkeypatch.chdir(outside)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    assert subprocess.run(["git", "describe", "--always"], capture_output=True).stderr.startswith(b"fatal")
    monkeypatch.delenv("TAPIR_VERBOSE", raising=False)
    monkeypatch.delenv("TAPIR_QUIET", raising=False)
    capfd.readouterr()
    run_benchmark(store, "lmeval", str(tiny_model), {"tasks": [MC], "limit": 2, "batch_size": 4})
    err = capfd.readouterr().err
    assert "fatal: not a git repository" not in err
    for phase in ("lmeval: loading 1 task(s)", "lmeval: scoring", "Running loglikelihood requests",
                  "lmeval: scored in", "rows stored in"):
        assert phase in err, phase
    monkeypatch.setenv("TAPIR_VERBOSE", "1")
    run_benchmark(store, "lmeval", str(tiny_model), {"tasks": [MC], "limit": 2, "batch_size": 4}, force=True)
    assert "fatal: not a git repository" in capfd.readouterr().err


def test_retrained_checkpoint_is_scored_again_even_in_a_shared_output_dir(store, tiny_model, tmp_path, monkeypatch):
    """Same path, new weights: a new run (its id has the weights), and lm-eval's
    request cache in a shared output_dir is the new weights' own, so every
    request is scored again; a copy of the first weights reuses the first cache."""
    import shutil

    from lm_eval.models.huggingface import HFLM

    from tapir_testing.models import build_tiny_model

    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_model, ckpt)
    options = {"tasks": [MC], "batch_size": 4, "limit": 4, "output_dir": str(tmp_path / "shared")}
    seen = []
    real_tokens = HFLM._loglikelihood_tokens

    def count_requests(self, requests, *args, **kwargs):
        seen.append(len(requests))
        return real_tokens(self, requests, *args, **kwargs)

    monkeypatch.setattr(HFLM, "_loglikelihood_tokens", count_requests)
    first = run_benchmark(store, "lmeval", str(ckpt), options)
    assert seen == [16]
    (ckpt / "model.safetensors").unlink()
    build_tiny_model(ckpt, seed=1)
    second = run_benchmark(store, "lmeval", str(ckpt), options)
    assert second[0]["run_id"] != first[0]["run_id"] and second[0]["meta"]["weights"] != first[0]["meta"]["weights"]
    assert seen == [16, 16]  # nothing read from the old weights' cache
    assert len(list((tmp_path / "shared").glob("lm-eval-cache-*_rank0.db"))) == 2
    copy = tmp_path / "copy"
    shutil.copytree(tiny_model, copy)
    third = run_benchmark(store, "lmeval", str(copy), options)
    assert seen == [16, 16]  # every request from the first weights' cache, found by their fingerprint
    assert third[0]["value"] == first[0]["value"]


def test_a_missing_include_path_is_named_by_preflight(store, tiny_model, tmp_path):
    """A task named through include_path, whose folder is missing, was
    reported as an unknown lm-eval task with a list of a thousand others."""
    from tapir.bench import PreflightFailed

    missing = tmp_path / "no-such-tasks"
    with pytest.raises(PreflightFailed, match=f"lmeval: include_path: no folder {missing} "):
        run_benchmark(store, "lmeval", str(tiny_model), {"tasks": ["tapir_demo_qa40"], "include_path": str(missing)})
    assert store["runs"].count == 0
