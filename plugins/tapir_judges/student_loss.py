"""``student-loss``: how well the student already predicts the teacher's
answer, from the student's own per-token loss on it.

Created with the STUDENT's backend (anything with ``score(prompts,
continuations)`` returning per-token logprobs, such as the ``hf`` backend).
``answer_a`` is the teacher's answer; ``answer_b`` is not used. The teacher
gets 10, the student ``10 * exp(-mean NLL per token)`` (the geometric-mean
probability of the teacher's tokens, times 10), so MFD is large where the
student finds the teacher's answer surprising.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from tapir.errors import TapirError
from tapir.options import Options, option
from tapir.roles import JudgeRequest, Judgment


class StudentLossJudge:
    """The student's own per-token loss on the teacher's answer."""

    name = "student-loss"
    kind = "loss"
    needs_student = True  # the pipeline passes the student's backend
    needs_model = False  # the student is the model
    reads_student_answer = False  # scores the teacher's answer under the student; no student answers needed

    class Options(Options):
        system: str | None = option(
            None, "a system message put before the question, to match how the student was trained")

    def __init__(self, backend: Any, options: "StudentLossJudge.Options"):
        if backend is None or not callable(getattr(backend, "score", None)):
            raise TapirError(
                "judge 'student-loss' needs the student's backend with a score() method "
                "(a local transformers model through the 'hf' backend)"
            )
        self.backend = backend
        self.options = options
        self.system = options.system

    def _prompt(self, question: str) -> list[dict[str, str]]:
        messages = [{"role": "system", "content": self.system}] if self.system else []
        return [*messages, {"role": "user", "content": question}]

    def _score(self, prompts, answers) -> list[list[float] | str]:
        """Per-token logprobs per answer (or an error string), in one batched
        call. When the backend rejects the batch because of an input (a
        TapirError, e.g. one answer too long), each answer is scored alone so
        the failure stays with its own item; other failures mark every item."""
        try:
            return list(self.backend.score(prompts, answers))
        except Exception as exc:  # noqa: BLE001 - recorded per judgment, never raised
            error = f"backend: {type(exc).__name__}: {exc}"
            if len(prompts) == 1 or not isinstance(exc, TapirError):
                return [error] * len(prompts)
        return [self._score([p], [a])[0] for p, a in zip(prompts, answers)]

    @staticmethod
    def _judgment(scored: list[float] | str) -> Judgment:
        if isinstance(scored, str):
            return Judgment(error=scored)
        logprobs = [lp for lp in scored if lp is not None]
        if not logprobs or not all(math.isfinite(lp) for lp in logprobs):
            return Judgment(error=f"backend: no finite token logprobs for the teacher's answer ({len(scored)} tokens)")
        nll = -sum(logprobs) / len(logprobs)
        return Judgment(score_a=10.0, score_b=10.0 * math.exp(-nll), details={"nll": nll, "tokens": len(logprobs)})

    def judge(self, requests: Sequence[JudgeRequest]) -> list[Judgment]:
        out: list[Judgment | None] = [None] * len(requests)
        todo = []
        for i, r in enumerate(requests):
            if not (r.answer_a or "").strip():
                out[i] = Judgment(error="request: student-loss needs the teacher's answer in answer_a")
            else:
                todo.append(i)
        if todo:
            prompts = [self._prompt(requests[i].question) for i in todo]
            answers = [requests[i].answer_a for i in todo]
            for i, scored in zip(todo, self._score(prompts, answers)):
                out[i] = self._judgment(scored)
        return [j for j in out if j is not None]
