"""Task-aware rewriting (paper section 3 and Appendix C).

Mode ``refine-instruction`` (the default, as the paper): the rewriter model
refines each instruction (a few refinement examples in the prompt, or none
for a model trained with ``tapir rewriter train``); the *teacher* answers the
refined instruction through the task-aware template of the item's task type
(step by step for Math and Reasoning, explained code for Code Generation and
Code Debug, a better answer elsewhere). The :class:`Rewrite` keeps the
refined instruction and that enhanced answer; the pipeline trains on
(original instruction, enhanced answer).

Mode ``polish-answer`` (tapir's earlier behaviour): the rewriter model
rewrites the teacher's answer (``item.output``) with a task-specific system
prompt; the instruction is left as it is.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal, Sequence

from tapir import options as opt
from tapir.errors import TapirError
from tapir.roles import CallEstimate, Completion, GenerationParams, GenerationRequest, Item
from tapir.textchecks import drifts_from, reads_as_answer, repeats_itself

from tapir_teachers.prompts import ANSWER_TEMPLATES, POLISH_SYSTEM, POLISH_USER, family, refine_messages
from tapir_teachers.records import Rewrite

EXAMPLES_FILE = Path(__file__).with_name("refine_examples.jsonl")

_LABEL = re.compile(
    r"^\s*(?:\*\*)?(?:(?:re-?written|refined|rewritten|improved|new)\s+)?instruction(?:\*\*)?\s*[:\-]\s*(?:\*\*)?\s*",
    re.I)


def load_examples(path: str | Path | None = None) -> list[dict[str, str]]:
    """Refinement examples: JSONL rows with ``instruction``, ``refined`` and
    optionally ``task_type``. ``None``: the examples shipped with tapir."""
    from tapir.jsonl import read_jsonl

    file = Path(path) if path else EXAMPLES_FILE
    if not file.is_file():
        raise TapirError(f"rewriter examples_path {file} does not exist")
    examples = []
    for lineno, row in read_jsonl(file):
        if not isinstance(row, dict) or not all(isinstance(row.get(k), str) and row[k].strip()
                                                for k in ("instruction", "refined")):
            raise TapirError(f"{file}:{lineno}: a refinement example needs non-empty 'instruction' and 'refined'")
        examples.append({"instruction": row["instruction"], "refined": row["refined"],
                         "task_type": row.get("task_type")})
    return examples


def clean_refinement(text: str) -> str:
    """The refined instruction in a rewriter reply: a leading label such as
    'Refined instruction:' and wrapping quotes are dropped."""
    text = _LABEL.sub("", (text or "").strip(), count=1).strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1].strip()
    return text


class TaskAwareRewriter:
    """Refines instructions and has the teacher answer them task-aware
    (``refine-instruction``), or polishes the teacher's answers
    (``polish-answer``). See the module docstring."""

    class Options(opt.Options):
        mode: Literal["refine-instruction", "polish-answer"] = opt.option(
            "refine-instruction", "'refine-instruction' (Appendix C: refine the instruction, the teacher "
            "answers it task-aware) or 'polish-answer' (rewrite the teacher's answer)")
        examples_path: str | None = opt.option(
            None, "JSONL of refinement examples (instruction, refined, task_type); none: tapir's own")
        num_examples: int = opt.option(
            4, "refinement examples shown per request, those of the item's task family first; "
            "0 for a rewriter model trained with 'tapir rewriter train'", ge=0)
        task_templates: bool = opt.option(
            True, "answer the refined instruction through the task-aware template of its task type "
            "(false: the refined instruction as it is)")
        min_chars: int = opt.option(8, "a refinement or answer shorter than this (characters) is a failure", ge=1)
        max_length_ratio: float = opt.option(
            8.0, "a refinement longer than this many times the original (at least 400 characters) is a "
            "failure; 0: no limit", ge=0)
        reject_answers: bool = opt.option(
            True, "a refinement that reads as an answer ('Hello. I'm ...', 'Sure, here is ...') is a failure "
            "(the original is kept)")
        min_overlap: float = opt.option(
            0.2, "a refinement keeping less than this share of the original's content words drifted and is a "
            "failure; 0: no check", ge=0, le=1)
        reject_loops: bool = opt.option(
            True, "a refinement or an enhanced answer that repeats itself (a generation loop) is a failure")

    @staticmethod
    def estimate(stage: str, n: int, prompt_tokens: int, options: "TaskAwareRewriter.Options") -> list[CallEstimate]:
        """Calls for ``n`` items (tapir.roles.Estimating): refine-instruction
        asks the rewriter (instruction plus examples) and then the teacher
        (the refined instruction); polish-answer asks the rewriter alone
        (instruction plus the teacher's answer)."""
        if options.mode == "refine-instruction":
            return [CallEstimate("rewriter", n, prompt_tokens + 600), CallEstimate("teacher", n, prompt_tokens + 80)]
        return [CallEstimate("rewriter", n, 2 * prompt_tokens)]

    @staticmethod
    def answered_by(options: "TaskAwareRewriter.Options") -> str:
        """Whose model answers a rewritten item (tapir.roles.Answering): the
        teacher in refine-instruction mode, the rewriter's own in polish-answer."""
        return "teacher" if options.mode == "refine-instruction" else "rewriter"

    def __init__(self, backend, options: "TaskAwareRewriter.Options"):
        if backend is None:
            raise TapirError("the rewriter needs a model: set rewriter.model in the config")
        self.backend = backend
        self.options = options
        needs_examples = options.mode == "refine-instruction" and options.num_examples > 0
        self.examples = load_examples(options.examples_path) if needs_examples else []

    # ---- prompts ----------------------------------------------------------------

    def examples_for(self, task_type: str | None) -> list[dict[str, str]]:
        """``num_examples`` examples: those of the item's task family first
        (in file order), then the others (in file order)."""
        fam = family(task_type)
        same = [ex for ex in self.examples if family(ex.get("task_type")) == fam]
        other = [ex for ex in self.examples if family(ex.get("task_type")) != fam]
        return (same + other)[: self.options.num_examples]

    def refine_messages(self, item: Item) -> list[dict[str, str]]:
        return refine_messages(item.instruction, self.examples_for(item.task_type))

    def answer_prompt(self, item: Item, refined: str) -> str:
        """What the teacher is asked: the refined instruction (plus the item's
        input) through the task-aware template of its task type."""
        prompt = f"{refined}\n\n{item.input}" if item.input else refined
        if not self.options.task_templates:
            return prompt
        return ANSWER_TEMPLATES[family(item.task_type)].format(instruction=prompt)

    def polish_messages(self, item: Item) -> list[dict[str, str]]:
        return [
            {"role": "system", "content": POLISH_SYSTEM[family(item.task_type)]},
            {"role": "user", "content": POLISH_USER.format(instruction=item.prompt, draft=item.output)},
        ]

    # ---- the work ---------------------------------------------------------------

    def rewrite(self, items: Sequence[Item], teacher, params: GenerationParams, on_result=None, *,
                teacher_params: GenerationParams | None = None,
                samples: Sequence[int] | None = None) -> list[Rewrite]:
        """One :class:`Rewrite` per item, in order; ``on_result(i, rewrite)``
        as each item finishes. ``params`` drive the rewriter model's calls,
        ``teacher_params`` the teacher's answers (default: ``params``);
        ``samples`` each item's sample index (a fresh draw: a new one)."""
        samples = list(samples) if samples is not None else [0] * len(items)
        if self.options.mode == "polish-answer":
            return self._polish(items, params, on_result, samples)
        return self._refine_and_answer(items, teacher, params, teacher_params or params, on_result, samples)

    def _finish(self, results: list, on_result, i: int, rewrite: Rewrite) -> None:
        results[i] = rewrite
        if on_result is not None:
            on_result(i, rewrite)

    def _short(self, text: str) -> bool:
        return len(text) < self.options.min_chars

    def _refine_and_answer(self, items, teacher, params, teacher_params, on_result, samples) -> list[Rewrite]:
        if teacher is None:
            raise TapirError("rewriter mode 'refine-instruction' needs the teacher to answer the refined "
                             "instructions")
        results: list[Rewrite | None] = [None] * len(items)
        refined: dict[int, tuple[str, int | None]] = {}

        def refinement_done(i: int, c: Completion) -> None:
            item = items[i]
            ids = [c.call_id] if c.call_id is not None else []
            reason = self._refinement_problem(item, c)
            if reason is not None:
                self._finish(results, on_result, i, Rewrite(item.instruction, "", reason, ids,
                                                            rejected="refinement" if c.ok else None))
            else:
                refined[i] = (clean_refinement(c.text), c.call_id)

        requests = [GenerationRequest(self.refine_messages(it), params, sample, meta={"item_id": it.id})
                    for it, sample in zip(items, samples)]
        completions = self.backend.generate(requests, on_result=refinement_done)
        # A backend that does not call on_result still returns every completion.
        for i in range(len(completions)):
            if results[i] is None and i not in refined:
                refinement_done(i, completions[i])
        # The refinements' requests and completions are done with: not held while the teacher answers.
        del requests, completions

        todo = sorted(refined)
        asks = [Item(items[i].id, self.answer_prompt(items[i], refined[i][0]), "", None, items[i].task_type,
                     dict(items[i].meta)) for i in todo]

        def answer_done(j: int, c: Completion) -> None:
            i = todo[j]
            if results[i] is not None:
                return
            text, refine_id = refined[i]
            ids = [x for x in (refine_id, c.call_id) if x is not None]
            answer = c.text.strip() if c.ok else ""
            if not c.ok:
                reason = f"teacher answer to the refined instruction failed: {c.error}"
            elif self._short(answer):
                reason = (f"teacher answer to the refined instruction is too short "
                          f"({len(answer)} < {self.options.min_chars} characters)")
            elif self.options.reject_loops and (loop := repeats_itself(answer)):
                reason = f"teacher answer to the refined instruction repeats itself: {loop}"
            else:
                reason = None
            self._finish(results, on_result, i, Rewrite(text, answer if reason is None else "", reason, ids,
                                                        rejected="answer" if c.ok and reason else None))

        if asks:
            answers = teacher.answer(asks, teacher_params, on_result=answer_done, samples=[samples[i] for i in todo])
            for j, c in enumerate(answers):
                answer_done(j, c)
        return results  # type: ignore[return-value]

    def _refinement_problem(self, item: Item, c: Completion) -> str | None:
        if not c.ok:
            return f"instruction refinement failed: {c.error}"
        text = clean_refinement(c.text)
        if self._short(text):
            return f"instruction refinement is empty or too short ({len(text)} < {self.options.min_chars} characters)"
        ratio = self.options.max_length_ratio
        limit = max(ratio * len(item.instruction), 400)
        if ratio and len(text) > limit:
            return (f"instruction refinement is too long ({len(text)} characters; the limit is {limit:.0f}: "
                    f"{ratio:g} times the original's {len(item.instruction)}, at least 400)")
        o = self.options
        problem = ((o.reject_answers and reads_as_answer(text, item.instruction))
                   or (o.reject_loops and repeats_itself(text))
                   or drifts_from(text, item.instruction, min_overlap=o.min_overlap))
        return f"instruction refinement rejected: {problem}" if problem else None

    def _polish(self, items, params, on_result, samples) -> list[Rewrite]:
        results: list[Rewrite | None] = [None] * len(items)
        asked = [i for i, it in enumerate(items) if it.output]
        for i, it in enumerate(items):
            if not it.output:
                self._finish(results, on_result, i, Rewrite(it.instruction, "", "no teacher answer to polish"))

        def done(j: int, c: Completion) -> None:
            i = asked[j]
            if results[i] is not None:
                return
            item = items[i]
            ids = [c.call_id] if c.call_id is not None else []
            text = c.text.strip() if c.ok else ""
            if not c.ok:
                reason = f"answer polishing failed: {c.error}"
            elif self._short(text):
                reason = f"polished answer is too short ({len(text)} < {self.options.min_chars} characters)"
            else:
                reason = None
            self._finish(results, on_result, i, Rewrite(item.instruction, text if reason is None else "", reason, ids,
                                                        rejected="answer" if c.ok and reason else None))

        if asked:
            requests = [GenerationRequest(self.polish_messages(items[i]), params, samples[i],
                                          meta={"item_id": items[i].id}) for i in asked]
            for j, c in enumerate(self.backend.generate(requests, on_result=done)):
                done(j, c)
        return results  # type: ignore[return-value]
