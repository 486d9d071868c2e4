"""Issue 20 item 7: the trainer's tokenisation prepares the chat template
once per pass (not once per example) and asks the tokenizer for ids only,
with the same tokens and labels as one example at a time."""

from __future__ import annotations

import pytest

pytest.importorskip("transformers")

from tapir.roles import TrainExample  # noqa: E402
from tapir_trainers.collate import IGNORE, encode_examples, end_of_turn_ids  # noqa: E402


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


def _examples(n: int) -> list[TrainExample]:
    out = []
    for i in range(n):
        prompt = [{"role": "user", "content": f"What is {i} plus {i}? " + "word " * (i % 7)}]
        if i % 3 == 0:
            prompt = [{"role": "system", "content": "Be brief."}, *prompt]
        out.append(TrainExample(prompt, f"The answer is {2 * i}." + " more" * (i % 5), 1.0 + i % 2))
    return out


def _one_by_one(tokenizer, ex: TrainExample, max_length: int):
    """The tokens and labels of one example, the way it was done per example."""
    p = tokenizer.apply_chat_template(ex.prompt, add_generation_prompt=True, tokenize=False)
    f = tokenizer.apply_chat_template(ex.prompt + [{"role": "assistant", "content": ex.response}], tokenize=False)
    p_ids = tokenizer(p, add_special_tokens=False)["input_ids"]
    r_ids = tokenizer(f[len(p):], add_special_tokens=False)["input_ids"]
    stops = end_of_turn_ids(tokenizer)
    cut = next((k for k, t in enumerate(r_ids) if t in stops), None)
    r_ids = r_ids[: cut + 1] if cut is not None else r_ids + [tokenizer.eos_token_id]
    ids, labels = p_ids + r_ids, [IGNORE] * len(p_ids) + r_ids
    return len(p_ids) >= max_length, ids[:max_length], labels[:max_length], len(ids) > max_length


def test_template_rendered_in_two_calls_with_the_same_tokens(tokenizer, monkeypatch):
    examples = _examples(40)
    encode_examples(tokenizer, examples[:1], 48)  # installs the default template if the tokenizer has none
    renders, encodes = [], []
    cls = type(tokenizer)
    original_render, original_call = cls.apply_chat_template, cls.__call__

    def render(self, conversation, *args, **kwargs):
        renders.append(len(conversation) if isinstance(conversation[0], list) else 1)
        return original_render(self, conversation, *args, **kwargs)

    def call(self, text, *args, **kwargs):
        encodes.append(kwargs)
        return original_call(self, text, *args, **kwargs)

    monkeypatch.setattr(cls, "apply_chat_template", render)
    monkeypatch.setattr(cls, "__call__", call)
    encoded, dropped = encode_examples(tokenizer, examples, 48)
    monkeypatch.undo()
    # one call for the prompts, one for the full conversations of the kept ones (a dropped
    # example's prompt fills max_length: its response is not rendered)
    assert renders == [40, 40 - len(dropped)]
    assert len(encodes) == 2 and all(k.get("return_attention_mask") is False for k in encodes)
    want = [_one_by_one(tokenizer, ex, 48) for ex in examples]
    assert dropped == [i for i, w in enumerate(want) if w[0]]
    assert [e.index for e in encoded] == [i for i, w in enumerate(want) if not w[0]]
    for enc in encoded:
        _, ids, labels, truncated = want[enc.index]
        assert (enc.input_ids, enc.labels, enc.truncated) == (ids, labels, truncated)
        assert enc.weight == examples[enc.index].weight
    # Some examples are dropped, some cut, some whole: every branch is compared.
    assert dropped and any(e.truncated for e in encoded) and not all(e.truncated for e in encoded)


def test_empty_and_bad_examples_still_checked(tokenizer):
    from tapir.errors import TapirError

    assert encode_examples(tokenizer, [], 32) == ([], [])
    with pytest.raises(TapirError, match="training example 1"):
        encode_examples(tokenizer, [_examples(1)[0], TrainExample([], "x", 1.0)], 32)
