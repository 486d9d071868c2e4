"""``reference-similarity``: score the student's answer by its similarity to
the teacher's. Needs no LLM, so it works offline with signal.

``answer_a`` is the teacher's answer, ``answer_b`` the student's. The
teacher gets 10 and the student ``1 + 9 * sim`` with ``sim`` in [0, 1], so
MFD = score_a - score_b runs from 0 (same answer) to 9 (nothing in common).
"""

from __future__ import annotations

import importlib.util
from typing import Any, Literal, Sequence

from tapir.errors import TapirError
from tapir.options import Options, option
from tapir.roles import JudgeRequest, Judgment

METHODS = ("embedding", "rouge")  # kept in step with Options.method


def _clip(x: float) -> float:
    return min(1.0, max(0.0, float(x)))


class ReferenceSimilarityJudge:
    """No LLM: the student's answer scored by its similarity to the teacher's.

    The encoder for ``method: embedding`` comes from the ``tapir_hf`` plugin
    (this plugin imports it; the core never does)."""

    name = "reference-similarity"
    kind = "reference"
    needs_student = False  # needs no model at all
    reads_student_answer = True  # compares the student's answer with the teacher's
    needs_model = False

    class Options(Options):
        method: Literal["embedding", "rouge"] = option(
            "embedding", "embedding: cosine of sentence embeddings, clipped to [0, 1]; rouge: ROUGE-L F1")
        encoder: str | None = option(
            None, "encoder for method=embedding: default the embedded all-MiniLM-L6-v2, or a folder / hub id")
        batch_size: int = option(64, "encoder batch size", ge=1)

    def __init__(self, backend: Any, options: "ReferenceSimilarityJudge.Options"):
        method = options.method
        if method == "embedding":
            missing = [m for m in ("torch", "transformers") if importlib.util.find_spec(m) is None]
            if missing:
                raise TapirError(f"reference-similarity with method=embedding needs {', '.join(missing)} "
                                 "(pip install 'tapir[local]'), or use method=rouge")
        elif importlib.util.find_spec("rouge_score") is None:
            raise TapirError("reference-similarity with method=rouge needs rouge-score (pip install rouge-score)")
        self.options = options
        self.method = method
        self.encoder = options.encoder
        self.batch_size = options.batch_size

    def similarities(self, references: Sequence[str], answers: Sequence[str]) -> list[float]:
        """Similarity in [0, 1] of each answer to its reference, batched."""
        if not references:
            return []
        if self.method == "rouge":
            from rouge_score import rouge_scorer

            scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
            return [_clip(scorer.score(ref, ans)["rougeL"].fmeasure) for ref, ans in zip(references, answers)]
        from tapir_hf.encoder import EMBEDDED_ENCODER, embed

        vectors = embed(list(references) + list(answers), name=self.encoder or EMBEDDED_ENCODER,
                        batch_size=self.batch_size)
        n = len(references)
        return [_clip((vectors[i] * vectors[n + i]).sum()) for i in range(n)]

    def judge(self, requests: Sequence[JudgeRequest]) -> list[Judgment]:
        out: list[Judgment | None] = [None] * len(requests)
        todo = []
        for i, r in enumerate(requests):
            if r.answer_b is None:
                out[i] = Judgment(error="request: reference-similarity needs answer_b (the student's answer)")
            elif not r.answer_b.strip() or not (r.answer_a or "").strip():
                # Nothing to compare: an empty answer shares nothing with the other.
                out[i] = Judgment(score_a=10.0, score_b=1.0, details={"similarity": 0.0, "method": self.method,
                                                                      "empty": True})
            else:
                todo.append(i)
        sims = self.similarities([requests[i].answer_a for i in todo], [requests[i].answer_b for i in todo])
        for i, sim in zip(todo, sims):
            out[i] = Judgment(score_a=10.0, score_b=1.0 + 9.0 * sim, details={"similarity": sim, "method": self.method})
        return [j for j in out if j is not None]
