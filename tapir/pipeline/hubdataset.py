"""The distilled dataset on the Hugging Face Hub, as the field publishes one.

With ``export.push_to_hub`` (and ``dataset: true``, the default) the export
stage also uploads the training set of every round as a dataset repo: one
split a round (``round_0`` = S0's data, ``round_r`` = what S_r was trained
on, easy and hard rows with their Eq. 4 weight), each row in the chat
``messages`` format (system turn when the data had one, the user's
instruction, the teacher's or the rewriter's answer) plus its id, task type,
origin, round and weight; and a dataset card (huggingface_hub's
``DatasetCardData``) with the config that made it, sizes and task mix per
round, teacher, judge and rewriter, and the run's calls and cost per stage.
Files are written under ``output_dir/hub-dataset`` first, then uploaded with
``HfApi.upload_folder``; the token is huggingface_hub's (``HF_TOKEN`` or
``huggingface-cli login``).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from tapir.errors import TapirError

DATASET_CARD = """{front}
# {name}: the distilled instruction data

Made with [tapir]({project_url}) (`pip install tapir-distill`), an implementation of
TAPIR, Task-Aware Curriculum Planning for Instruction Refinement ([paper]({paper_url})).
Each split is the training set of one round: `round_0` trained S0 on every
instruction with the teacher's answer; `round_r` trained S_r on the hard
set (the seed cut D_S, the teacher's new instructions and the task-aware
rewrites) weighted alpha_r against the easy rest weighted 1 - alpha_r
(column `weight`, Eq. 4).

```python
from datasets import load_dataset
ds = load_dataset("{repo_id}", split="round_{last}")
```

| | |
|---|---|
| teacher | {teacher} |
| judge (MFD) | {judge} |
| rewriter | {rewriter} |
| student | {student} |
| source data | {source} |

## Splits

| split | rows | hard | easy | alpha | task mix (top 5) |
|---|---:|---:|---:|---:|---|
{splits}

## Cost of the run

| stage | calls | tokens | cost (USD) |
|---|---:|---:|---:|
{costs}

## Config

```yaml
{config}
```
"""


def public(value: Any) -> Any:
    """``value`` with every local absolute path (alone or after a
    ``backend:`` prefix) cut to its last part: a card on the Hub names files,
    not this machine's folders."""
    import os

    if isinstance(value, str):
        prefix, sep, rest = value.partition(":")
        if sep and os.path.isabs(rest) and "/" not in prefix:
            return prefix + ":" + os.path.basename(rest.rstrip("/"))
        return os.path.basename(value.rstrip("/")) if os.path.isabs(value) else value
    if isinstance(value, dict):
        return {k: public(v) for k, v in value.items()}
    if isinstance(value, list):
        return [public(v) for v in value]
    return value


def chat_row(example, item) -> dict[str, Any]:
    """One training example in the chat ``messages`` format."""
    messages = [dict(m) for m in example.prompt] + [{"role": "assistant", "content": example.response}]
    return {"id": item.id, "messages": messages, "task_type": item.task_type,
            "origin": item.meta.get("origin") or "seed", "round": item.meta.get("round"),
            "weight": round(float(example.weight), 6)}


def rounds_of(job) -> list[int]:
    return sorted(r for (name, r) in job.engine.by_node if name == "train")


def round_rows(job, r: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(chat rows, summary) of round ``r``'s training set."""
    from tapir.pipeline.stages.train import training_set, weighted_examples

    hard, easy, alpha = training_set(job, r)
    examples = weighted_examples(hard, easy, alpha, job.config.curriculum.weighting)
    items = hard + easy
    rows = [chat_row(ex, it) for ex, it in zip(examples, items)]
    mix = Counter(it.task_type or "unlabelled" for it in items)
    return rows, {"rows": len(rows), "hard": len(hard) if r else None, "easy": len(easy) if r else None,
                  "alpha": alpha if r else None, "task_mix": dict(mix.most_common())}


def stage_costs(job) -> list[tuple[str, int, int, float]]:
    """(stage, calls, tokens, cost) over the recipe's nodes, as recorded when
    each ran (a reused node counts what it cost when it was computed)."""
    totals: dict[str, list[float]] = {}
    for (name, r) in job.engine.by_node:
        if name == "export":
            continue
        info = job.upstream_info(name, r)
        row = totals.setdefault(name, [0, 0, 0.0])
        row[0] += info.get("calls", 0) or 0
        row[1] += info.get("tokens", 0) or 0
        row[2] += info.get("cost", 0.0) or 0.0
    return [(name, int(c), int(t), round(cost, 4)) for name, (c, t, cost) in totals.items() if c]


def write_dataset_folder(job, folder: Path, repo_id: str) -> dict[str, Any]:
    """Write ``data/round_r.jsonl`` per round and ``README.md`` (the card) into
    ``folder``; returns rows per split."""
    from huggingface_hub import DatasetCardData

    from tapir.pipeline.modelcard import PAPER_URL, PROJECT_URL, TAGS

    cfg = job.config
    (folder / "data").mkdir(parents=True, exist_ok=True)
    summaries: dict[int, dict[str, Any]] = {}
    for r in rounds_of(job):
        rows, summaries[r] = round_rows(job, r)
        tmp = folder / "data" / f"round_{r}.jsonl.tmp"
        with tmp.open("w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        tmp.replace(folder / "data" / f"round_{r}.jsonl")
    total = sum(s["rows"] for s in summaries.values())
    size = next(label for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                                           (1_000_000, "100K<n<1M"), (float("inf"), "n>1M")) if total < limit)
    data = DatasetCardData(
        pretty_name=f"{cfg.name} (tapir)", task_categories=["text-generation"], size_categories=[size],
        tags=[*TAGS, "synthetic"],
        configs=[{"config_name": "default",
                  "data_files": [{"split": f"round_{r}", "path": f"data/round_{r}.jsonl"} for r in summaries]}])

    def model(ref) -> str:
        return f"`{public(ref.model)}`" if ref is not None and ref.model is not None else "none"

    splits = "\n".join(
        f"| round_{r} | {s['rows']} | {s['hard'] if s['hard'] is not None else '-'} | "
        f"{s['easy'] if s['easy'] is not None else '-'} | "
        f"{'-' if s['alpha'] is None else format(s['alpha'], '.2f')} | "
        + ", ".join(f"{k} {v}" for k, v in list(s["task_mix"].items())[:5]) + " |"
        for r, s in summaries.items())
    costs = "\n".join(f"| {name} | {calls} | {tokens} | {cost:.4f} |" for name, calls, tokens, cost in stage_costs(job))
    import yaml

    from tapir.pipeline.reads import config_value

    # The sections the export stage reads (its config view refuses the rest), speed options left out.
    shown = {k: config_value(cfg, k) for k in ("name", "seed", "data", "teacher", "student", "judge", "rewriter",
                                                "trainer", "curriculum", "resample")}
    shown = {k: v for k, v in shown.items() if v is not None}
    config = yaml.safe_dump(public(shown), sort_keys=False, allow_unicode=True, width=100)
    text = DATASET_CARD.format(
        front="---\n" + data.to_yaml() + "\n---", name=cfg.name, project_url=PROJECT_URL, paper_url=PAPER_URL,
        repo_id=repo_id, last=max(summaries), teacher=model(cfg.teacher.model) if cfg.teacher else "none",
        judge=f"{cfg.judge.name} ({model(cfg.judge.model)})",
        rewriter=f"{cfg.rewriter.name} ({model(cfg.rewriter.model)})" if cfg.rewriter else "none",
        student=f"`{public(cfg.student.model)}`",
        source=cfg.data.hf_dataset or (Path(cfg.data.path).name if cfg.data.path else "-"),
        splits=splits, costs=costs or "| (no LLM calls) | 0 | 0 | 0 |", config=config.rstrip())
    (folder / "README.md").write_text(text, encoding="utf-8")
    return {f"round_{r}": s["rows"] for r, s in summaries.items()}


def push_dataset(job) -> dict[str, Any] | None:
    """Upload the per-round training sets with their card (``export.push_to_hub``)."""
    push = job.config.export.push_to_hub
    if push is None or not push.dataset:
        return None
    repo = push.dataset_repo_id or push.repo_id.replace("{round}", "").rstrip("-_")
    folder = job.ctx.out_dir / "hub-dataset"
    splits = write_dataset_folder(job, folder, repo)
    from huggingface_hub import HfApi

    api = HfApi()
    try:
        api.create_repo(repo_id=repo, repo_type="dataset", private=push.private, exist_ok=True)
        api.upload_folder(repo_id=repo, repo_type="dataset", folder_path=str(folder),
                          commit_message=f"tapir: {job.config.name} training data, {len(splits)} rounds")
    except Exception as exc:  # noqa: BLE001 - one line: what failed and the fix
        raise TapirError(
            f"export.push_to_hub: uploading the dataset ({folder}) to {repo} failed: {type(exc).__name__}: {exc}. "
            f"Log in (`huggingface-cli login` or HF_TOKEN with write access) and re-run; the files are kept"
        ) from None
    return {"repo": f"https://huggingface.co/datasets/{repo}", "splits": splits}
