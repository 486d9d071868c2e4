"""LLM task classifier: a prompt over any tapir backend.

Prompts (option ``prompt``):

``table6`` (default)
    The paper's Table 6 (Appendix B) in our own words: explain the reason
    first, then classify the instruction into one task type or domain of the
    list. The label is read from the end of the reply (a ``Task type: X`` /
    ``#Task Classification#: X`` line, else the last line, else the task type
    the reply names last).
``label``
    tapir's earlier prompt: the label only, read from the first line.

Either way the label is parsed leniently (case, spacing, punctuation, common
synonyms, a label named inside a sentence, then the closest label by
``difflib``). Answers that still do not parse are asked again once, with a
nudge that repeats the allowed names; what fails twice becomes ``Others``
with confidence 0.0 and is counted in :attr:`LLMClassifier.stats`.
"""

from __future__ import annotations

import difflib
import re
from collections import Counter
from typing import Any, Literal, Sequence

from tapir.options import GenerationOverrides, InputFile, Options, generation_params, option
from tapir.roles import GenerationParams, GenerationRequest
from tapir.tasks import TASK_TYPES

FALLBACK = "Others"

# TAPIR paper, Appendix B, Table 6 ("task classification"; its labels trained
# the paper's DeBERTa classifier): system prompt, then a request to explain
# the reason first and classify the #Given Instruction# into one task type or
# domain of the list, with the table's #Given Instruction# / #Task
# Classification# markers. Reworded here; the list is printed as the table
# prints it.
TABLE6_SYSTEM = "You are a helpful assistant."

TABLE6_PROMPT = """First explain your reasoning, then classify the task type or domain of the #Given Instruction#. \
The task type or domain must be one from this list: {label_list}

#Given Instruction#:
{text}

#Task Classification#:"""

TABLE6_NUDGE = ("I could not tell which task type you chose. Reply again: give the reason briefly, then end with a "
                "last line of the form 'Task type: <name>', where <name> is exactly one of: {labels}.")

PROMPT = """Which type of task does the instruction below ask for? Pick exactly one task type from this list:

{labels}

Instruction:
\"\"\"
{text}
\"\"\"

Reply with the name of one task type from the list and nothing else."""

NUDGE = "That is not one of the task types. Reply with exactly one of these names and nothing else: {labels}."

# Lower-cased alternative names a model may use -> task type.
SYNONYMS: dict[str, str] = {
    "maths": "Math", "mathematics": "Math", "arithmetic": "Math", "math problem": "Math",
    "coding": "Code Generation", "code": "Code Generation", "programming": "Code Generation",
    "code writing": "Code Generation", "codegen": "Code Generation",
    "debugging": "Code Debug", "debug": "Code Debug", "bug fix": "Code Debug", "bug fixing": "Code Debug",
    "code debugging": "Code Debug", "code fix": "Code Debug",
    "creative writing": "Writing", "composition": "Writing",
    "cs": "Computer Science", "computing": "Computer Science", "computer": "Computer Science",
    "logic": "Reasoning", "logical reasoning": "Reasoning", "puzzle": "Reasoning",
    "formatting": "Complex Format", "format": "Complex Format", "structured output": "Complex Format",
    "common sense": "Common-Sense", "commonsense": "Common-Sense",
    "hypothetical": "Counterfactual", "what if": "Counterfactual",
    "translation": "Multilingual", "translate": "Multilingual", "language": "Multilingual",
    "role play": "Roleplay", "role-play": "Roleplay", "role playing": "Roleplay",
    "biological": "Biology", "tech": "Technology", "ethical": "Ethics", "morality": "Ethics",
    "sports": "Sport", "soccer": "Sport", "football": "Sport", "athletics": "Sport", "legal": "Law", "medical": "Medicine", "healthcare": "Medicine",
    "literary": "Literature", "fun": "Entertainment", "movies": "Entertainment", "games": "Entertainment", "arts": "Art",
    "toxic": "Toxicity", "offensive": "Toxicity", "economics": "Economy", "finance": "Economy",
    "business": "Economy", "physical": "Physics", "historical": "History", "chemical": "Chemistry",
    "philosophical": "Philosophy", "wellness": "Health", "fitness": "Health",
    "environment": "Ecology", "environmental": "Ecology", "ecological": "Ecology",
    "grammatical": "Grammar", "grammar correction": "Grammar", "paraphrasing": "Paraphrase",
    "rephrase": "Paraphrase", "rewording": "Paraphrase", "rewriting": "Paraphrase",
    "other": "Others", "misc": "Others", "miscellaneous": "Others", "none": "Others", "general": "Others",
}

_PREFIX = re.compile(r"^\s*(?:the\s+)?(?:task\s*type|type|category|label|answer)\s*(?:is)?\s*[:\-=]?\s*", re.I)


def _squash(text: str) -> str:
    return "".join(ch for ch in text.lower() if ch.isalnum())


class LabelParser:
    """Maps free model text to one of ``labels``; ``parse`` returns
    ``(label, how)`` with ``how`` in exact | lenient | fuzzy, or ``(None, "none")``."""

    def __init__(self, labels: Sequence[str] = TASK_TYPES, fuzzy_cutoff: float = 0.75):
        self.labels = list(labels)
        self.fuzzy_cutoff = fuzzy_cutoff
        self._squashed = {_squash(label): label for label in self.labels}
        self._synonyms = {_squash(k): v for k, v in SYNONYMS.items() if v in self.labels}
        # Longest first so that "Code Debug" wins over a shorter name inside it.
        names = sorted(self.labels, key=len, reverse=True)
        self._mention = re.compile(
            r"(?<![a-z0-9])(" + "|".join(re.escape(n).replace(r"\ ", r"[\s_-]*").replace(r"\-", r"[\s_-]*")
                                        for n in names) + r")(?![a-z0-9])",
            re.I,
        )

    def mentions(self, text: str) -> list[str]:
        """The task type names in ``text``, in order, as written."""
        return self._mention.findall(text)

    def canonical(self, mention: str) -> str:
        return self._squashed[_squash(mention)]

    def parse(self, text: str | None) -> tuple[str | None, str]:
        if not text or not text.strip():
            return None, "none"
        first = next((line for line in text.strip().splitlines() if line.strip()), "")
        first = _PREFIX.sub("", first.strip().strip("*_`#>-• ")).strip()
        first = first.strip("\"'*_`.,;:!()[]{} ")
        if first in self.labels:
            return first, "exact"
        key = _squash(first)
        if key in self._squashed:
            return self._squashed[key], "lenient"
        if key in self._synonyms:
            return self._synonyms[key], "lenient"
        # A sentence that names exactly one task type ("The task type is Law.").
        # One that names several (a weak model echoing the list) is ambiguous.
        mentioned = {self._squashed[_squash(m)] for m in self._mention.findall(text)}
        if len(mentioned) == 1:
            return mentioned.pop(), "lenient"
        if mentioned or len(first.split()) > 4:
            return None, "none"
        # A short answer: a synonym inside it, else the closest name.
        words = first.lower().replace("-", " ").split()
        phrases = [" ".join(words[i:j]) for i in range(len(words)) for j in range(len(words), i, -1)]
        for phrase in sorted(phrases, key=len, reverse=True):
            if _squash(phrase) in self._synonyms:
                return self._synonyms[_squash(phrase)], "lenient"
        close = difflib.get_close_matches(key, list(self._squashed), n=1, cutoff=self.fuzzy_cutoff) if key else []
        if close:
            return self._squashed[close[0]], "fuzzy"
        return None, "none"


_VERDICT_LINE = re.compile(
    r"^[\s\*_#>\-]*(?:#?\s*task\s*classification\s*#?|task\s*type(?:\s*or\s*domain)?|classification|"
    r"category|domain|label|answer|final\s*answer)\s*(?:is)?\s*[:\-=]\s*(.+)$",
    re.IGNORECASE | re.MULTILINE,
)


def parse_reasoned(parser: LabelParser, text: str | None) -> tuple[str | None, str]:
    """The label at the end of a reason-first reply (Table 6): the last
    ``Task type: X`` / ``#Task Classification#: X`` / ``Category: X`` line,
    else the last non-empty line, else the task type the reply names last
    (unless it names many: a reply that echoes the list is ambiguous). A
    last verdict line that names several task types is no label."""
    if not text or not text.strip():
        return None, "none"
    verdicts = _VERDICT_LINE.findall(text)
    if verdicts:
        # The last verdict line decides; one that names several task types
        # ("Task type: Math or Reasoning") is ambiguous: no label is picked.
        last = verdicts[-1]
        if len({parser.canonical(m) for m in parser.mentions(last)}) > 1:
            return None, "none"
        for value in reversed(verdicts):
            label, how = parser.parse(value)
            if label is not None:
                return label, how
    lines = [line for line in text.strip().splitlines() if line.strip()]
    label, how = parser.parse(lines[-1])
    if label is not None:
        return label, how
    mentions = [parser.canonical(m) for m in parser.mentions(text)]
    if mentions and len(set(mentions)) <= 3:
        return mentions[-1], "lenient"
    return None, "none"


CONFIDENCE = {"exact": 1.0, "lenient": 0.8, "fuzzy": 0.5}
RETRY_FACTOR = 0.8


class LLMClassifier:
    """Classify with a chat model. ``backend`` is any tapir backend (the
    pipeline passes a CachedBackend, so re-runs cost nothing).

    ``stats`` counts exact / lenient / fuzzy / retried / fallback answers and
    backend errors, over the classifier's life; ``raw`` keeps the model's
    texts per classified item.
    """

    needs_model = True  # a chat model (classifier.model) is required

    class Options(Options):
        prompt: Literal["table6", "label"] = option(
            "table6", "table6: the paper's prompt, reason first then the label; label: the label only")
        labels: list[str] | None = option(None, "the task types to choose from (default all; Others is added)")
        retry: bool = option(True, "ask an unparseable answer once more, with a nudge")
        few_shot: int = option(
            0, "labelled examples of distinct types shown first as worked chat turns (label prompt only)", ge=0)
        examples: list[Any] | None = option(
            None, "in-process only: the labelled Example objects the few-shot turns come from")
        labels_path: InputFile | None = option(
            None, "labelled JSONL the few-shot turns come from (default the shipped seed set)")
        params: GenerationOverrides | None = option(
            None, "generation overrides: max_new_tokens, temperature, top_p, stop, top_logprobs, seed "
                  "(default: greedy, 256 new tokens for table6, 16 for label)")

    @staticmethod
    def generation(options: "LLMClassifier.Options") -> GenerationParams:
        """The classifier's generation parameters (tapir.roles.Sampling): room
        for Table 6's reasoning, else a label's few tokens; greedy; ``params`` override."""
        defaults = {"max_new_tokens": 256 if options.prompt == "table6" else 16, "temperature": 0.0}
        return generation_params(defaults, options.params)

    def __init__(self, backend: Any, options: "LLMClassifier.Options"):
        if backend is None:
            from tapir.errors import TapirError

            raise TapirError("the llm classifier needs a model: set classifier.model (e.g. smollm2-135m-instruct)")
        self.backend = backend
        self.options = options
        self.prompt = options.prompt
        self.labels = list(options.labels) if options.labels else list(TASK_TYPES)
        if FALLBACK not in self.labels:
            self.labels.append(FALLBACK)
        self.parser = LabelParser(self.labels)
        self.params: GenerationParams = self.generation(options)
        self.retry = options.retry
        self.shots = self._pick_shots(options.few_shot if options.prompt == "label" else 0,
                                      options.examples, options.labels_path)
        self.stats: Counter[str] = Counter()
        self.raw: list[list[str]] = []  # model texts per classified item, in call order

    def _pick_shots(self, k: int, examples: Sequence[Any] | None, labels_path: str | None) -> list[tuple[str, str]]:
        """``k`` labelled (text, label) pairs of distinct labels: the first
        example of each of the first ``k`` labels (in ``self.labels`` order)."""
        if k <= 0:
            return []
        if examples is None:
            from tapir_classifiers.labelled import load_labelled

            examples = load_labelled(labels_path)
        first: dict[str, Any] = {}
        for ex in examples:
            first.setdefault(ex.label, ex)
        chosen = [first[label] for label in self.labels if label in first][:k]
        return [(ex.text, ex.label) for ex in chosen]

    def _messages(self, text: str) -> list[dict[str, str]]:
        """The prompt (label prompt: after ``few_shot`` worked examples as earlier chat turns)."""
        if self.prompt == "table6":
            label_list = "[" + ", ".join(repr(label) for label in self.labels) + "]"
            return [{"role": "system", "content": TABLE6_SYSTEM},
                    {"role": "user", "content": TABLE6_PROMPT.format(label_list=label_list, text=text.strip())}]
        names = ", ".join(self.labels)
        turns: list[dict[str, str]] = []
        for shot, label in self.shots:
            turns.append({"role": "user", "content": PROMPT.format(labels=names, text=shot.strip())})
            turns.append({"role": "assistant", "content": label})
        turns.append({"role": "user", "content": PROMPT.format(labels=names, text=text.strip())})
        return turns

    def classify(self, texts: Sequence[str], item_ids: Sequence[str | None] | None = None) -> list[tuple[str, float]]:
        """(label, confidence) per text. ``item_ids`` (one per text) are
        recorded with each call in ``llm_calls``, with role ``classifier``."""
        if not texts:
            return []
        if item_ids is not None and len(item_ids) != len(texts):
            raise ValueError(f"classify: {len(item_ids)} item ids for {len(texts)} texts")
        metas = [{"role": "classifier", "item_id": item_ids[i] if item_ids is not None else None}
                 for i in range(len(texts))]
        messages = [self._messages(t) for t in texts]
        first = self.backend.generate([GenerationRequest(m, self.params, meta=metas[i])
                                       for i, m in enumerate(messages)])
        results: list[tuple[str, float] | None] = [None] * len(texts)
        raws: list[list[str]] = [[c.text if c.ok else f"<error: {c.error}>"] for c in first]
        pending: list[int] = []
        for i, completion in enumerate(first):
            if not completion.ok:
                self.stats["errors"] += 1
            label, how = self._parse(completion.text if completion.ok else None)
            if label is None:
                pending.append(i)
            else:
                self.stats[how] += 1
                results[i] = (label, CONFIDENCE[how])
        if pending and self.retry:
            nudge = (TABLE6_NUDGE if self.prompt == "table6" else NUDGE).format(labels=", ".join(self.labels))
            again = [
                GenerationRequest(
                    [*messages[i], {"role": "assistant", "content": first[i].text or ""},
                     {"role": "user", "content": nudge}],
                    self.params,
                    meta=metas[i],
                )
                for i in pending
            ]
            second = self.backend.generate(again)
            still: list[int] = []
            for i, completion in zip(pending, second):
                self.stats["retried"] += 1
                raws[i].append(completion.text if completion.ok else f"<error: {completion.error}>")
                if not completion.ok:
                    self.stats["errors"] += 1
                label, how = self._parse(completion.text if completion.ok else None)
                if label is None:
                    still.append(i)
                else:
                    self.stats[how] += 1
                    results[i] = (label, CONFIDENCE[how] * RETRY_FACTOR)
            pending = still
        for i in pending:
            self.stats["fallback"] += 1
            results[i] = (FALLBACK, 0.0)
        self.raw.extend(raws)
        return [r for r in results if r is not None]

    def _parse(self, text: str | None) -> tuple[str | None, str]:
        if self.prompt == "table6":
            return parse_reasoned(self.parser, text)
        return self.parser.parse(text)

    @property
    def fallbacks(self) -> int:
        """How many texts fell back to ``Others`` because no answer parsed."""
        return self.stats["fallback"]
