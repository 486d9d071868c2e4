"""Model cards by the Hub's conventions, and ``export.push_to_hub``.

A checkpoint's ``README.md`` has YAML front matter the Hub reads:
``base_model`` (the base model's hub id, only when there is one: a named
model's registered ``hub_id``, an ``hf:ORG/NAME`` id, or the ``base_model``
of a local folder's own card), ``library_name``, ``pipeline_tag``, ``tags``
and, when ``tapir bench`` results exist for the checkpoint, ``model-index``
with them. The text names every folder relative to the card's own folder.
A LoRA checkpoint's ``adapter/README.md`` (peft writes an unfilled template
there) is replaced by a filled adapter card.

The export stage rewrites the cards of every round (so benchmark results run
since training appear) and, with ``export.push_to_hub``, uploads each round's
folder with ``huggingface_hub``.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import yaml

from tapir.errors import TapirError

PROJECT_URL = "https://pypi.org/project/tapir-distill/"
PAPER_URL = "https://arxiv.org/abs/2405.13448"
TAGS = ["tapir", "distillation", "instruction-tuning", "arxiv:2405.13448"]
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# Shown under these names in a card.
BENCHMARK_NAMES = {"mtbench": "MT-Bench", "alpacaeval": "AlpacaEval 2.0", "lmeval": "lm-eval"}
# Bookkeeping rows, not scores.
_DIAGNOSTIC = {"failures", "baseline_failures"}


# --------------------------------------------------------------------------- the card


MODEL_CARD = """{front}
# {name}: student S{round}

Distilled with [tapir]({project_url}) (`pip install tapir-distill`), an
implementation of TAPIR, Task-Aware Curriculum Planning for Instruction
Refinement ([paper]({paper_url})).

| | |
|---|---|
| base model | {base} |
| trained from | {parent} |
| teacher | {teacher} |
| judge (MFD) | {judge} |
| rewriter | {rewriter} |
| round | {round} of {rounds} |
| training examples this round | {examples} |
| weight of a hard / easy example (alpha) | {alpha} |
| trainer | {trainer} `{trainer_options}` |
| files | {files} |

## Training data

{data}

## Evaluation

{evals}
"""


def model_card(job, path: str, round: int) -> None:
    """Write ``path/README.md`` (and, for LoRA, ``path/adapter/README.md``)
    by the Hub's conventions (see the module docstring): ``base_model`` the
    base's hub id when it has one, paths relative to the card, the training
    data (counted from the round's training set), and benchmark results in
    ``model-index``."""
    cfg = job.config
    folder = Path(path).resolve()
    hub = hub_id_for(cfg.student.model, cfg.student.options)
    base = f"[{hub}](https://huggingface.co/{hub})" if hub else f"`{relative(cfg.student.model, folder)}`"
    if hub and hub != cfg.student.model:
        base += f" (`{cfg.student.model}`)"
    previous = job.upstream_info("train", round - 1).get("path") if round > 0 else None
    parent = f"S{round - 1}: `{os.path.relpath(previous, folder)}`" if previous else "the base model"
    summary = training_summary(job, round)
    rows = eval_rows(job.store, folder)
    front = card_data(f"{cfg.name}-round-{round}", rows, base_model=hub)

    def role(ref_name: str, ref) -> str:
        return ref_name + (f" (`{relative(ref.model, folder)}`)" if ref is not None else "")

    adapter = folder / "adapter"
    has_adapter = (adapter / "adapter_config.json").is_file()
    text = MODEL_CARD.format(
        front=front.rstrip("\n"),
        name=cfg.name,
        round=round,
        rounds=cfg.curriculum.rounds,
        project_url=PROJECT_URL,
        paper_url=PAPER_URL,
        base=base,
        parent=parent,
        teacher=f"`{relative(cfg.teacher.model.model, folder)}`" if cfg.teacher.model else "dataset answers",
        judge=role(cfg.judge.name, cfg.judge.model),
        rewriter=role(cfg.rewriter.name, cfg.rewriter.model) if cfg.rewriter else "none",
        trainer=cfg.trainer.name,
        trainer_options=json.dumps(_relative_values(cfg.trainer.options, folder), sort_keys=True),
        files="merged weights and tokenizer here" + ("; the LoRA adapter in `adapter/`" if has_adapter else ""),
        examples=summary["examples"],
        alpha="n/a (S0: all data, weight 1)" if summary["alpha"] is None
        else f"{summary['alpha']:.2f} / {1 - summary['alpha']:.2f}",
        data=data_section(summary),
        evals=eval_section(rows),
    )
    (folder / "README.md").write_text(text, encoding="utf-8")
    if has_adapter:
        if previous:
            loads_from = os.path.relpath(previous, adapter)
        else:
            loads_from = hub or relative(job.ctx.student_base(), adapter)
        (adapter / "README.md").write_text(
            adapter_card(cfg.name, round, adapter, hub, loads_from, summary), encoding="utf-8")


# --------------------------------------------------------------------------- hub ids and paths


def front_matter_of(folder: Path) -> dict[str, Any]:
    """The YAML front matter of ``folder/README.md`` ({} when none)."""
    readme = Path(folder) / "README.md"
    try:
        text = readme.read_text(encoding="utf-8")
    except OSError:
        return {}
    if not text.startswith("---\n"):
        return {}
    end = text.find("\n---", 4)
    try:
        data = yaml.safe_load(text[4:end]) if end > 0 else None
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def hub_id_for(model_id: str | None, options: dict[str, Any] | None = None) -> str | None:
    """The Hugging Face Hub id of a model id, or None when it has none: a
    named model's registered ``hub_id`` (``smollm2-135m-instruct`` ->
    ``HuggingFaceTB/SmolLM2-135M-Instruct``), a transformers backend's
    ``ORG/NAME`` that is not a local folder, or the ``base_model`` a local
    folder's card names (a checkpoint trained from a hub model)."""
    if not model_id:
        return None
    from tapir.models import backend_flag, resolve
    from tapir.plugins import registry

    named = registry().by_role["models"].get(model_id)
    if named is not None and named.options.get("hub_id"):
        return str(named.options["hub_id"])
    try:
        spec = resolve(model_id, options)
    except TapirError:
        return None
    if not backend_flag(spec.backend, "local_weights"):
        return None  # an API model
    folder = Path(spec.name).expanduser()
    if folder.is_dir():
        base = front_matter_of(folder).get("base_model")
        return base if isinstance(base, str) and _HUB_ID.match(base) else None
    return spec.name if _HUB_ID.match(spec.name) else None


def relative(value: str, folder: Path) -> str:
    """``value`` with an absolute path (alone or after a ``backend:`` prefix)
    written relative to ``folder``."""
    prefix, sep, rest = value.partition(":")
    if sep and os.path.isabs(rest) and "/" not in prefix:
        return prefix + ":" + relative(rest, folder)
    if os.path.isabs(value):
        return os.path.relpath(value, folder)
    return value


def _relative_values(value: Any, folder: Path) -> Any:
    if isinstance(value, str):
        return relative(value, folder)
    if isinstance(value, dict):
        return {k: _relative_values(v, folder) for k, v in value.items()}
    if isinstance(value, list):
        return [_relative_values(v, folder) for v in value]
    return value


# --------------------------------------------------------------------------- what the card says


def training_summary(job, round: int) -> dict[str, Any]:
    """Examples, hard / easy, weights and task mix of round ``round``'s
    training set: as its train stage recorded them (``card_data`` in its
    info), else counted from the set built again (a train stage from before
    it recorded them)."""
    cfg = job.config
    counts = job.upstream_info("train", round).get("card_data")
    if not isinstance(counts, dict):
        from tapir.pipeline.stages.train import training_counts, training_set, weighted_examples

        hard, easy, alpha = training_set(job, round)
        counts = training_counts(round, hard, easy, alpha, cfg.curriculum.weighting,
                                 weighted_examples(hard, easy, alpha, cfg.curriculum.weighting))
    data = cfg.data
    source = data.hf_dataset or (Path(data.path).name if data.path else None)
    return {**counts, "weighting": counts.get("weighting") or cfg.curriculum.weighting, "source": source,
            "limit": data.limit}


def round_(x: float, n: int = 4) -> float:
    return round(float(x), n)


def eval_rows(store, checkpoint: str | Path) -> list[dict[str, Any]]:
    """The latest headline benchmark row per (benchmark, task, metric,
    subset, judge, mode) stored for ``checkpoint`` (its resolved path), from
    runs that did not fail."""
    from tapir.store.benchmarks import has_results_table, model_results

    if not has_results_table(store):
        return []
    key = str(Path(checkpoint).resolve())

    rows = model_results(store, key)
    latest: dict[tuple, dict[str, Any]] = {}
    for rid, bench, task, metric, value, stderr, n, meta in rows:
        meta = json.loads(meta) if meta else {}
        if value is None or meta.get("run_failed") or meta.get("primary") is False or metric in _DIAGNOSTIC:
            continue
        ident = (bench, task, metric, meta.get("subset"), meta.get("judge"), meta.get("judge_mode"))
        latest[ident] = {"benchmark": bench, "task": task, "metric": metric, "value": value, "stderr": stderr,
                         "n": n, "subset": meta.get("subset"), "judge": meta.get("judge"),
                         "judge_mode": meta.get("judge_mode"), "data_version": meta.get("data_version")}
    return list(latest.values())


def eval_results(rows: list[dict[str, Any]]) -> list:
    """huggingface_hub ``EvalResult`` objects, one per (benchmark, task,
    subset, judge, mode) and metric: what the Hub reads as ``model-index``."""
    from huggingface_hub import EvalResult

    results = []
    for r in rows:
        bench, task = r["benchmark"], r["task"]
        label = BENCHMARK_NAMES.get(bench, bench)
        args = {k: v for k, v in (("subset", r["subset"]), ("judge", r["judge"]), ("judge_mode", r["judge_mode"]))
                if v}
        results.append(EvalResult(
            task_type="text-generation", task_name="Text Generation",
            dataset_type=bench if bench != "lmeval" else task,
            dataset_name=f"{label} ({task})" if task not in ("overall", bench) else label,
            dataset_args=args or None,
            metric_type=r["metric"], metric_value=r["value"], metric_name=f"{task} {r['metric']}",
            verified=False, source_name="tapir bench", source_url=PROJECT_URL))
    return results


def card_data(name: str, rows: list[dict[str, Any]], *, base_model: str | None = None) -> str:
    """A model card's YAML front matter, built as huggingface_hub's
    ``ModelCardData`` (``base_model`` only when the base has a hub id;
    ``model-index`` from the benchmark rows)."""
    from huggingface_hub import ModelCardData

    fields: dict[str, Any] = {}
    if base_model:
        fields.update(base_model=base_model, base_model_relation="finetune")
    results = eval_results(rows)
    data = ModelCardData(library_name="transformers", pipeline_tag="text-generation", tags=list(TAGS),
                         model_name=name if results else None, eval_results=results or None, **fields)
    return "---\n" + data.to_yaml() + "\n---\n"


def model_index(name: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The Hub's ``model-index`` for ``rows`` (as huggingface_hub writes it)."""
    from huggingface_hub import ModelCardData

    results = eval_results(rows)
    if not results:
        return []
    return ModelCardData(model_name=name, eval_results=results).to_dict()["model-index"]


def _front(data: dict[str, Any]) -> str:
    return "---\n" + yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=1000) + "---\n"


def data_section(s: dict[str, Any]) -> str:
    lines = []
    source = s["source"] or "the configured data"
    lines.append(f"- {s['examples']} training examples from `{source}`"
                 + (f" (first {s['limit']} rows)" if s.get("limit") else "") + "; by origin: "
                 + ", ".join(f"{k} {v}" for k, v in s["origins"].items()) + ".")
    if s["alpha"] is None:
        lines.append("- S0: every ingested instruction with the teacher's answer, weight 1.")
    else:
        scheme = ("each hard example weighs alpha, each easy one 1 - alpha (Eq. 4)" if s["weighting"] == "eq4"
                  else "hard examples share alpha of the total weight")
        lines.append(f"- {s['hard']} hard (the seed cut D_S plus the expanded instructions, rewritten) and "
                     f"{s['easy']} easy examples; alpha {s['alpha']:.2f}: {scheme}; hard share of the weight "
                     f"{s['hard_weight_share']:.2f}.")
    if s["task_mix"]:
        mix = ", ".join(f"{k} {v}" for k, v in s["task_mix"].items())
        lines.append(f"- Task mix: {mix}" + (f"; {s['unlabelled']} not classified" if s["unlabelled"] else "") + ".")
    else:
        lines.append("- Task mix: not known for this round (the task classifier runs after S0).")
    return "\n".join(lines)


def eval_section(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "No benchmark results yet: `tapir bench run NAME --model <this folder>`, then re-run `tapir distill` to refresh this card."
    lines = ["| benchmark | task | metric | value | n | subset | judge |", "|---|---|---|---:|---:|---|---|"]
    for r in rows:
        value = f"{r['value']:.4g}" + (f" ± {r['stderr']:.2g}" if r.get("stderr") else "")
        judge = (r["judge"] or "-") + (f" ({r['judge_mode']})" if r.get("judge_mode") and r["judge"] else "")
        lines.append(f"| {BENCHMARK_NAMES.get(r['benchmark'], r['benchmark'])} | {r['task']} | {r['metric']} | "
                     f"{value} | {r['n'] if r['n'] is not None else ''} | {r['subset'] or 'full'} | {judge} |")
    return "\n".join(lines)


def adapter_card(name: str, round: int, folder: Path, base_hub: str | None, parent: str,
                 summary: dict[str, Any]) -> str:
    """The filled card of a LoRA checkpoint's ``adapter`` folder."""
    config = {}
    try:
        config = json.loads((folder / "adapter_config.json").read_text())
    except (OSError, ValueError):
        pass
    front: dict[str, Any] = {}
    if base_hub and round == 0:  # later rounds' adapters apply to S_{r-1}, which has no hub id
        front["base_model"] = base_hub
    front.update({"library_name": "peft", "pipeline_tag": "text-generation", "tags": [*TAGS, "lora"]})
    targets = config.get("target_modules")
    if isinstance(targets, list):
        targets = ", ".join(sorted(targets))
    lines = [
        f"# {name}: LoRA adapter of student S{round}",
        "",
        f"The LoRA adapter tapir trained for round {round}. The merged model (base plus this adapter) is the "
        "parent folder (`..`): load that unless you want the adapter itself.",
        "",
        f"This adapter applies on top of **{parent}**"
        + (" (the base model)" if round == 0 else f" (student S{round - 1}, the model round {round} started from)")
        + ", not on top of any other model. "
        + ("" if round == 0 else f"The lineage goes back to the base model {base_hub or 'named in ../README.md'}."),
        "",
        "| | |", "|---|---|",
        f"| rank r | {config.get('r', '?')} |",
        f"| lora_alpha | {config.get('lora_alpha', '?')} |",
        f"| lora_dropout | {config.get('lora_dropout', '?')} |",
        f"| target modules | {targets or '?'} |",
        f"| training examples | {summary['examples']} |",
        "",
        "```python",
        "from peft import PeftModel",
        "from transformers import AutoModelForCausalLM",
        "",
        f"base = AutoModelForCausalLM.from_pretrained({parent!r})",
        'model = PeftModel.from_pretrained(base, "<this folder>")',
        "```",
        "",
        f"Made with [tapir]({PROJECT_URL}) ([TAPIR]({PAPER_URL})); the training data is described in ../README.md.",
        "",
    ]
    return _front(front) + "\n" + "\n".join(lines)


# --------------------------------------------------------------------------- push


def push_rounds(job, checkpoints: dict[int, str]) -> dict[str, str]:
    """Upload each round's checkpoint folder (``export.push_to_hub``); returns
    round -> hub URL. The token is huggingface_hub's (``HF_TOKEN`` or
    ``huggingface-cli login``)."""
    push = job.config.export.push_to_hub
    if push is None or not checkpoints:
        return {}
    from huggingface_hub import HfApi

    api = HfApi()
    created: set[str] = set()
    pushed: dict[str, str] = {}
    per_round = "{round}" in push.repo_id
    for r, folder in sorted(checkpoints.items()):
        repo = push.repo_id.format(round=r)
        template = push.path_in_repo if push.path_in_repo is not None else ("" if per_round else "round-{round}")
        in_repo = template.format(round=r).strip("/")
        try:
            if repo not in created:
                api.create_repo(repo_id=repo, repo_type="model", private=push.private, exist_ok=True)
                created.add(repo)
            api.upload_folder(repo_id=repo, repo_type="model", folder_path=str(folder),
                              path_in_repo=in_repo or None,
                              commit_message=f"tapir: {job.config.name} round {r}",
                              ignore_patterns=["checkpoint-*", "checkpoint-*/**", "*.tmp"])
        except Exception as exc:  # noqa: BLE001 - one line: what failed and the fix
            raise TapirError(
                f"export.push_to_hub: uploading round {r} ({folder}) to {repo} failed: {type(exc).__name__}: "
                f"{exc}. Log in (`huggingface-cli login` or HF_TOKEN with write access) and re-run; "
                f"the checkpoints are kept") from None
        pushed[str(r)] = f"https://huggingface.co/{repo}" + (f"/tree/main/{in_repo}" if in_repo else "")
    return pushed


def export_cards(job) -> None:
    """In the export stage: rewrite every round's cards (now with the
    benchmark results stored for it), then push when configured."""

    checkpoints: dict[int, str] = {}
    for (name, r) in sorted(job.engine.by_node):
        if name != "train":
            continue
        info = job.upstream_info("train", r)
        path = info.get("path")
        if path and Path(path).is_dir():
            model_card(job, path, r)
            checkpoints[r] = path
    pushed = push_rounds(job, checkpoints)
    if pushed:
        job.info["pushed"] = pushed
