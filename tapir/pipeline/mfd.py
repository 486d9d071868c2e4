"""Model Fitting Difficulty: judge teacher vs student, MFD = score(teacher) -
score(student), and the cut that makes the hard seed set D_S."""

from __future__ import annotations

import statistics
from typing import Sequence

from tapir import progress
from tapir.config import MFDConfig
from tapir.pipeline.context import Context
from tapir.roles import Item, JudgeRequest
from tapir.store.db import dumps, utcnow

CHUNK = 64


def judge_mfd(ctx: Context, items: Sequence[Item], student_path: str, round: int, info: dict) -> None:
    """Judge every item that has a teacher and a student answer and no
    judgment yet for this round; store the judgment and the MFD score."""
    judge = ctx.judge(student_path)
    judge_name = ctx.config.judge.name
    judge_model = ctx.config.judge.model.model if ctx.config.judge.model else judge_name
    teacher = ctx.teacher_responses(round)
    reads_answer = ctx.judge_reads_student_answer()
    student = ctx.responses("student", round) if reads_answer else {}
    judged = {
        r[0]
        for r in ctx.store.execute(
            "select item_id from judgments where run_id = ? and judge = ? and round = ?",
            [ctx.run.id, judge_name, round],
        ).fetchall()
    }
    todo = [it for it in items if it.id in teacher and (it.id in student or not reads_answer)
            and it.id not in judged]
    failures = 0
    with progress.bar(f"judging MFD (round {round})", len(todo)) as bar:
        for start in range(0, len(todo), CHUNK):
            chunk = todo[start : start + CHUNK]
            requests = [
                JudgeRequest(
                    question=it.prompt,
                    answer_a=teacher[it.id]["text"],
                    answer_b=student[it.id]["text"] if reads_answer else "",
                    item_id=it.id,
                    category=it.task_type,
                )
                for it in chunk
            ]
            judgments = judge.judge(requests)
            with ctx.store.db.conn:
                for it, j in zip(chunk, judgments):
                    ctx.store["judgments"].insert(
                        {
                            "run_id": ctx.run.id,
                            "item_id": it.id,
                            "judge": judge_name,
                            "model": judge_model,
                            "kind": getattr(judge, "kind", "mfd"),
                            "position": "both" if j.details.get("orders_used", 1) == 2 else "ab",
                            "round": round,
                            "response_a_id": teacher[it.id]["id"],
                            "response_b_id": student[it.id]["id"] if reads_answer else None,
                            "score_a": j.score_a,
                            "score_b": j.score_b,
                            "preference": j.preference,
                            "raw": dumps({"raw": j.raw, "details": j.details}),
                            "error": j.error,
                            "created_at": utcnow(),
                        },
                        ignore=True,
                    )
                    if j.ok and j.score_a is not None and j.score_b is not None:
                        ctx.set_score(it.id, "teacher_score", round, j.score_a)
                        ctx.set_score(it.id, "student_score", round, j.score_b)
                        ctx.set_score(it.id, "mfd", round, j.score_a - j.score_b)
                    else:
                        failures += 1
            bar.update(len(chunk))
    mfd = ctx.scores("mfd", round)
    info.update(judged=len(todo), failures=failures, **distribution(list(mfd.values())))


def distribution(values: Sequence[float]) -> dict:
    if not values:
        return {"n": 0}
    qs = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
    return {
        "n": len(values),
        "mean": round(statistics.fmean(values), 4),
        "q1": round(qs[0], 4),
        "median": round(qs[1], 4),
        "q3": round(qs[2], 4),
        "min": round(min(values), 4),
        "max": round(max(values), 4),
    }


def select_hard(mfd: dict[str, float], cfg: MFDConfig) -> tuple[set[str], float, str]:
    """The hard seed set D_S and the threshold used.

    ``top_fraction`` keeps the highest-MFD fraction, ``quantile`` keeps MFD
    above that quantile, otherwise the paper's absolute ``delta``: MFD > delta.
    Ties are broken by item id so the cut is deterministic.
    """
    if not mfd:
        return set(), float("nan"), "empty"
    ranked = sorted(mfd.items(), key=lambda kv: (-kv[1], kv[0]))
    if cfg.top_fraction is not None:
        k = max(1, round(cfg.top_fraction * len(ranked)))
        chosen = ranked[:k]
        return {i for i, _ in chosen}, chosen[-1][1], f"top {cfg.top_fraction:.0%}"
    if cfg.quantile is not None:
        values = sorted(mfd.values())
        threshold = _quantile(values, cfg.quantile)
        return {i for i, v in mfd.items() if v > threshold}, threshold, f"MFD > q{cfg.quantile:g}"
    delta = cfg.delta if cfg.delta is not None else 2.0
    return {i for i, v in mfd.items() if v > delta}, delta, f"MFD > {delta:g}"


def _quantile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolated quantile of sorted values (numpy's default)."""
    if len(sorted_values) == 1:
        return sorted_values[0]
    pos = q * (len(sorted_values) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def select_seed(ctx: Context, info: dict) -> None:
    mfd = ctx.scores("mfd", 0)
    hard, threshold, rule = select_hard(mfd, ctx.config.mfd)
    cap = ctx.config.curriculum.seed_size
    if cap is not None and len(hard) > cap:
        hard = set(sorted(hard, key=lambda i: (-mfd[i], i))[:cap])
        rule += f", capped at seed_size {cap}"
    with ctx.store.db.conn:
        for item_id in mfd:
            ctx.set_score(item_id, "hard", 0, 1.0 if item_id in hard else 0.0)
    info.update(rule=rule, threshold=threshold, hard=len(hard), easy=len(mfd) - len(hard))
    progress.say(f"   seed set D_S: {len(hard)} of {len(mfd)} items ({rule}, threshold {threshold:.3f})")


def histogram(values: Sequence[float], bins: int = 10, width: int = 40) -> str:
    """A text histogram for the terminal."""
    if not values:
        return "(no MFD scores)"
    lo, hi = min(values), max(values)
    step = (hi - lo) / bins or 1.0
    counts = [0] * bins
    for v in values:
        counts[min(int((v - lo) / step), bins - 1)] += 1
    top = max(counts)
    lines = []
    for b, c in enumerate(counts):
        left = lo + b * step
        lines.append(f"{left:8.2f} .. {left + step:8.2f} | {'#' * round(width * c / top):<{width}} {c}")
    return "\n".join(lines)
