"""The default teacher (answers, Table 7 expansion, creator parsing), the
task-aware rewriter (Appendix C refinement, polish-answer) and
``tapir rewriter train`` on the tiny model."""

from __future__ import annotations

import json

import pytest

from tapir.errors import ConfigError, TapirError
from tapir.plugins import registry
from tapir.roles import Completion, GenerationParams, GenerationRequest, Item


class FakeBackend:
    """Answers every request with ``reply(messages)`` (a str or a Completion)
    and numbers the calls like llm_calls rows (call_id 100, 101, ...)."""

    def __init__(self, reply, first_id: int = 100, model_id: str = "fake"):
        self.reply = reply
        self.model_id = model_id
        self.next_id = first_id
        self.requests = []

    def generate(self, requests, on_result=None):
        out = []
        for i, request in enumerate(requests):
            self.requests.append(request)
            answer = self.reply(request.messages)
            c = answer if isinstance(answer, Completion) else Completion(text=answer)
            c.call_id = self.next_id
            self.next_id += 1
            out.append(c)
            if on_result is not None:
                on_result(i, c)
        return out


def teacher(backend, **options):
    return registry().get("teachers", "default").create(backend, options=options)


def rewriter(backend, **options):
    return registry().get("rewriters", "task-aware").create(backend, options=options)


PARAMS = GenerationParams(max_new_tokens=64, temperature=0.7, seed=3)


# --- teacher ------------------------------------------------------------------------------


def test_teacher_answer_sends_the_prompt_with_and_without_system_prompt():
    backend = FakeBackend(lambda m: "an answer")
    seen = []
    items = [Item("a", "Name a colour.", ""), Item("b", "Translate this.", "bonjour")]
    out = teacher(backend).answer(items, PARAMS, on_result=lambda i, c: seen.append(i))
    assert [c.text for c in out] == ["an answer", "an answer"] and seen == [0, 1]
    assert [r.messages for r in backend.requests] == [
        [{"role": "user", "content": "Name a colour."}],
        [{"role": "user", "content": "Translate this.\n\nbonjour"}],
    ]
    assert all(r.params is PARAMS for r in backend.requests)

    backend = FakeBackend(lambda m: "x")
    teacher(backend, system_prompt="Be brief.").answer(items[:1], PARAMS)
    assert backend.requests[0].messages == [{"role": "system", "content": "Be brief."},
                                            {"role": "user", "content": "Name a colour."}]


TABLE7_EXPECTED_USER = (
    "Act as an Instruction Creator. Your goal is to take the #Given Instruction# as inspiration and "
    "write a brand-new instruction. The new instruction must be of the same task type as the "
    "#Given Instruction#: Math. Keep the LENGTH and the difficulty level of the "
    "#Created Instruction# close to those of the #Given Instruction#, but make the content of the "
    "#Created Instruction# different from the content of the #Given Instruction#. The "
    "#Created Instruction# has to be reasonable, and a person must be able to understand it and "
    "respond to it. The phrases '#Given Instruction#', '#Created Instruction#', 'given instruction' "
    "and 'created instruction' must not appear anywhere in the #Created Instruction#.\n"
    "#Given Instruction#:\n"
    "What is 17 * 23?\n"
    "#Created Instruction#:"
)


def test_create_instructions_uses_table7_by_default():
    backend = FakeBackend(lambda m: "What is 19 * 21?")
    groups = [("Math", [Item("s1", "What is 17 * 23?"), Item("s2", "Add 2 and 3.")]),
              ("Writing", [Item("s3", "Write a haiku.", "about rain")])]
    out = teacher(backend).create_instructions(groups, [7, 8], PARAMS)
    assert [c.text for c in out] == ["What is 19 * 21?"] * 2
    first, second = backend.requests
    # One given instruction (the seed, first of the group): Table 7 shows one.
    assert first.messages == [{"role": "system", "content": "You are a helpful assistant."},
                              {"role": "user", "content": TABLE7_EXPECTED_USER}]
    assert second.messages[1]["content"].endswith("#Given Instruction#:\nWrite a haiku.\n\nabout rain\n"
                                                  "#Created Instruction#:")
    assert "same task type as the #Given Instruction#: Writing." in second.messages[1]["content"]
    assert [r.sample for r in backend.requests] == [7, 8]
    assert all(r.params is PARAMS for r in backend.requests)
    # The call log records the seed instruction each new one is written from.
    assert [r.meta["item_id"] for r in backend.requests] == ["s1", "s3"]


def test_table7_prompt_keeps_every_clause():
    from tapir_teachers.prompts import TABLE7_USER

    text = TABLE7_USER
    for clause in ("Instruction Creator", "inspiration", "brand-new instruction", "same task type",
                   "LENGTH", "difficulty level", "content of the #Created Instruction# different",
                   "reasonable", "understand it and respond to it",
                   "'#Given Instruction#', '#Created Instruction#', 'given instruction' and 'created instruction'",
                   "must not appear", "#Given Instruction#:\n{instruction}\n#Created Instruction#:"):
        assert clause in text, clause


def test_create_instructions_with_the_earlier_prompt():
    backend = FakeBackend(lambda m: "x")
    groups = [("Math", [Item("s1", "What is 17 * 23?"), Item("s2", "Add 2 and 3.")])]
    teacher(backend, expansion_prompt="tapir-examples").create_instructions(groups, [0], PARAMS)
    assert backend.requests[0].messages == [{"role": "user", "content": (
        "You write new tasks for an AI assistant.\nTask type: Math.\n"
        "Here are example instructions of this type and difficulty:\n1. What is 17 * 23?\n2. Add 2 and 3.\n"
        "Write ONE new instruction of the same task type and similar difficulty. It must be different from the "
        "examples, self-contained and answerable in a few paragraphs.\n"
        "Reply with the new instruction only, no answer and no numbering.")}]


def test_clean_instruction_method():
    t = teacher(FakeBackend(lambda m: ""))
    assert t.clean_instruction("#Created Instruction#: What is 19 * 21 minus 4?") == "What is 19 * 21 minus 4?"
    assert t.clean_instruction("Instruction: 1. Describe a sunset over the ocean.\nAnswer: red") == (
        "Describe a sunset over the ocean.")
    # A second block the model invented is cut off.
    assert t.clean_instruction("Name three rivers in Asia.\n#Given Instruction#: foo\n#Created Instruction#: bar") == (
        "Name three rivers in Asia.")
    # A reply that repeats the given block before its own (seen from SmolLM2-135M).
    assert t.clean_instruction("#Given Instruction#:\nWhat is 17 * 23?\n#Created Instruction#:\n"
                               "Imagine your favourite athlete winning a medal.") == (
        "Imagine your favourite athlete winning a medal.")
    assert t.clean_instruction("#Given Instruction#: What is 17 * 23?\n#Created Instruction#:") is None
    # Table 7's banned phrases make a reply malformed.
    assert t.clean_instruction("Rewrite the given instruction in French.") is None
    assert t.clean_instruction("Explain the created instruction to a child.") is None
    assert t.clean_instruction("ok") is None and t.clean_instruction("") is None
    assert teacher(FakeBackend(lambda m: ""), min_words=5).clean_instruction("Name three rivers.") is None
    assert teacher(FakeBackend(lambda m: ""), max_chars=20).clean_instruction("Name three rivers in Asia.") is None


def test_teacher_rejects_unknown_and_retired_options():
    with pytest.raises(ConfigError) as err:
        teacher(FakeBackend(lambda m: ""), system_promt="x")
    assert "unknown option 'system_promt'. Did you mean 'system_prompt'?" in str(err.value)
    # Generation settings come as GenerationParams, not as options.
    with pytest.raises(ConfigError, match="unknown option 'max_new_tokens'"):
        teacher(FakeBackend(lambda m: ""), max_new_tokens=10)
    with pytest.raises(ConfigError, match="expansion_prompt"):
        teacher(FakeBackend(lambda m: ""), expansion_prompt="table-7")
    with pytest.raises(TapirError, match="teacher needs a model"):
        teacher(None)


# --- rewriter: refine-instruction ------------------------------------------------------------

REFINED = "Refined: {}"


def refiner_reply(messages):
    return "Refined instruction: " + REFINED.format(messages[-1]["content"])


def teacher_reply(messages):
    return "ENHANCED " + messages[-1]["content"][:30]


@pytest.mark.parametrize("task_type, family", [
    ("Math", "math"), ("Reasoning", "math"), ("Code Generation", "code"), ("Code Debug", "code"),
    ("Writing", "general"), ("History", "general"), (None, "general"),
])
def test_refine_mode_messages_per_task_type(task_type, family):
    from tapir_teachers.prompts import ANSWER_TEMPLATES, REFINE_SYSTEM
    from tapir_teachers.rewriter import load_examples
    from tapir_teachers.prompts import family as family_of

    rw_backend, t_backend = FakeBackend(refiner_reply, 100), FakeBackend(teacher_reply, 200)
    rw = rewriter(rw_backend)
    item = Item("i1", "Explain recursion.", "", "old teacher answer", task_type)
    results = rw.rewrite([item], teacher(t_backend), PARAMS)

    examples = load_examples()
    same = [e for e in examples if family_of(e["task_type"]) == family]
    shown = (same + [e for e in examples if family_of(e["task_type"]) != family])[:4]
    expected = [{"role": "system", "content": REFINE_SYSTEM}]
    for ex in shown:
        expected += [{"role": "user", "content": ex["instruction"]},
                     {"role": "assistant", "content": ex["refined"]}]
    expected.append({"role": "user", "content": "Explain recursion."})
    assert rw_backend.requests[0].messages == expected
    # the shipped examples cover every family, so the first shown is of the item's family
    assert family_of(shown[0]["task_type"]) == family

    refined = "Refined: Explain recursion."
    asked = ANSWER_TEMPLATES[family].format(instruction=refined)
    assert t_backend.requests[0].messages == [{"role": "user", "content": asked}]
    assert [r.params for r in t_backend.requests] == [PARAMS]
    rewrite = results[0]
    assert (rewrite.instruction, rewrite.error, rewrite.call_ids) == (refined, None, [100, 200])
    assert rewrite.answer == "ENHANCED " + asked[:30]


def test_task_templates_say_what_the_paper_asks():
    from tapir_teachers.prompts import ANSWER_TEMPLATES

    assert "step by step" in ANSWER_TEMPLATES["math"]
    assert "code" in ANSWER_TEMPLATES["code"] and "explain how it works" in ANSWER_TEMPLATES["code"]
    assert "helpful, accurate and detailed" in ANSWER_TEMPLATES["general"]
    assert all(t.startswith("{instruction}\n\n") for t in ANSWER_TEMPLATES.values())


def test_refine_mode_with_input_without_examples_and_templates(tmp_path):
    rw_backend, t_backend = FakeBackend(refiner_reply), FakeBackend(teacher_reply)
    item = Item("i1", "Summarise the text.", "The cat sat on the mat.", None, "Math")
    rewriter(rw_backend, num_examples=0, task_templates=False).rewrite([item], teacher(t_backend), PARAMS)
    from tapir_teachers.prompts import REFINE_SYSTEM

    assert rw_backend.requests[0].messages == [{"role": "system", "content": REFINE_SYSTEM},
                                               {"role": "user", "content": "Summarise the text."}]
    assert t_backend.requests[0].messages == [
        {"role": "user", "content": "Refined: Summarise the text.\n\nThe cat sat on the mat."}]

    path = tmp_path / "ex.jsonl"
    path.write_text(json.dumps({"instruction": "Add 1 and 2.", "refined": "Add 1 and 2; show the sum.",
                                "task_type": "Math"}) + "\n")
    rw_backend = FakeBackend(refiner_reply)
    rewriter(rw_backend, examples_path=str(path), num_examples=3).rewrite([item], teacher(t_backend), PARAMS)
    assert rw_backend.requests[0].messages[1:] == [
        {"role": "user", "content": "Add 1 and 2."}, {"role": "assistant", "content": "Add 1 and 2; show the sum."},
        {"role": "user", "content": "Summarise the text."}]

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"instruction": "x"}) + "\n")
    with pytest.raises(TapirError, match="bad.jsonl:1: a refinement example needs"):
        rewriter(rw_backend, examples_path=str(bad))
    with pytest.raises(TapirError, match="does not exist"):
        rewriter(rw_backend, examples_path=str(tmp_path / "missing.jsonl"))


def test_refine_mode_failures_are_reported_never_the_original():
    def refine(messages):
        text = messages[-1]["content"]
        if text.startswith("ERR"):
            return Completion(error="http 500: server error")
        if text.startswith("SHORT"):
            return "ok"
        if text.startswith("LONG"):
            return "word " * 200
        return REFINED.format(text)

    def answer(messages):
        if "NOANSWER" in messages[-1]["content"]:
            return Completion(error="timeout after 60 s")
        if "TINY" in messages[-1]["content"]:
            return "no"
        return "a fine enhanced answer"

    items = [Item(str(i), text, task_type="Writing")
             for i, text in enumerate(["ERR one", "SHORT two", "LONG three", "NOANSWER four", "TINY five", "fine six"])]
    t_backend = FakeBackend(answer, 200)
    finished = []
    results = rewriter(FakeBackend(refine, 100)).rewrite(
        items, teacher(t_backend), PARAMS, on_result=lambda i, r: finished.append((i, r.error is None)))
    errors = [r.error for r in results]
    assert errors[0] == "instruction refinement failed: http 500: server error"
    assert errors[1] == "instruction refinement is empty or too short (2 < 8 characters)"
    assert errors[2] == ("instruction refinement is too long (999 characters; the limit is 400: "
                         "8 times the original's 10, at least 400)")
    assert errors[3] == "teacher answer to the refined instruction failed: timeout after 60 s"
    assert errors[4] == "teacher answer to the refined instruction is too short (2 < 8 characters)"
    assert errors[5] is None
    assert [r.answer for r in results] == [""] * 5 + ["a fine enhanced answer"]
    # A failed refinement keeps the original instruction and never reaches the teacher.
    assert [r.instruction for r in results[:3]] == ["ERR one", "SHORT two", "LONG three"]
    assert len(t_backend.requests) == 3
    assert [r.call_ids for r in results] == [[100], [101], [102], [103, 200], [104, 201], [105, 202]]
    assert sorted(finished) == [(0, False), (1, False), (2, False), (3, False), (4, False), (5, True)]
    assert len(finished) == 6  # once per item


def test_refine_mode_needs_a_teacher_and_a_model():
    with pytest.raises(TapirError, match="needs the teacher"):
        rewriter(FakeBackend(refiner_reply)).rewrite([Item("a", "x y z")], None, PARAMS)
    with pytest.raises(TapirError, match="rewriter needs a model"):
        rewriter(None)


def test_teacher_params_can_differ_from_the_rewriters():
    t_backend, rw_backend = FakeBackend(teacher_reply), FakeBackend(refiner_reply)
    own = GenerationParams(max_new_tokens=512)
    rewriter(rw_backend).rewrite([Item("a", "Name a river.")], teacher(t_backend), PARAMS, teacher_params=own)
    assert rw_backend.requests[0].params is PARAMS and t_backend.requests[0].params is own


def test_clean_refinement_drops_labels_and_quotes():
    from tapir_teachers.rewriter import clean_refinement

    assert clean_refinement("Re-written Instruction: Do X.") == "Do X."
    assert clean_refinement('**Refined instruction:** "Do X carefully."') == "Do X carefully."
    assert clean_refinement("Instruction - Do Y.") == "Do Y."
    assert clean_refinement("Describe the instruction set of ARM.") == "Describe the instruction set of ARM."


# --- rewriter: polish-answer ---------------------------------------------------------------


def test_polish_mode_messages_and_failures():
    from tapir_teachers.prompts import POLISH_SYSTEM

    def reply(messages):
        if "BROKEN" in messages[-1]["content"]:
            return Completion(error="rate limited")
        return "A polished answer."

    backend = FakeBackend(reply, 10)
    items = [Item("m", "What is 2+2?", "", "4", "Math"), Item("c", "Write hello world.", "", "print(1)", "Code Debug"),
             Item("g", "Describe Paris.", "in one line", "A city.", "Art"), Item("n", "No answer yet.", "", None, "Art"),
             Item("b", "BROKEN one.", "", "draft", "Art")]
    results = rewriter(backend, mode="polish-answer").rewrite(items, None, PARAMS)
    sent = [r.messages for r in backend.requests]
    assert sent[0] == [{"role": "system", "content": POLISH_SYSTEM["math"]}, {"role": "user", "content": (
        "Instruction:\nWhat is 2+2?\n\nDraft answer:\n4\n\nWrite the improved answer only.")}]
    assert sent[1][0]["content"] == POLISH_SYSTEM["code"]
    assert sent[2] == [{"role": "system", "content": POLISH_SYSTEM["general"]}, {"role": "user", "content": (
        "Instruction:\nDescribe Paris.\n\nin one line\n\nDraft answer:\nA city.\n\nWrite the improved answer only.")}]
    assert len(sent) == 4  # the item without a teacher answer is not sent
    assert [(r.instruction, r.answer, r.error, r.call_ids) for r in results] == [
        ("What is 2+2?", "A polished answer.", None, [10]),
        ("Write hello world.", "A polished answer.", None, [11]),
        ("Describe Paris.", "A polished answer.", None, [12]),
        ("No answer yet.", "", "no teacher answer to polish", []),
        ("BROKEN one.", "", "answer polishing failed: rate limited", [13]),
    ]


def test_rewriter_rejects_unknown_options():
    with pytest.raises(ConfigError) as err:
        rewriter(FakeBackend(refiner_reply), mdoe="polish-answer")
    assert "unknown option 'mdoe'. Did you mean 'mode'?" in str(err.value)
    with pytest.raises(ConfigError, match="option 'mode'"):
        rewriter(FakeBackend(refiner_reply), mode="polish")
    with pytest.raises(ConfigError, match="unknown option 'refine_instruction'"):
        rewriter(FakeBackend(refiner_reply), refine_instruction=True)
    with pytest.raises(ConfigError, match="num_examples"):
        rewriter(FakeBackend(refiner_reply), num_examples=-1)


# --- tapir rewriter train ----------------------------------------------------------------------


def invoke(group, args, code=0):
    from click.testing import CliRunner

    result = CliRunner().invoke(group, args)
    assert result.exit_code == code, (result.output, result.exception)
    return result


PAIRS = [
    ("Give three examples of mammals.", "List three mammals, one line each, with a fact about each."),
    ("What is 12 * 7?", "Compute 12 * 7. Show the multiplication step by step and give the product."),
    ("Write a poem.", "Write a four-line rhyming poem about autumn leaves."),
    ("Write a poem.", "Write a four-line rhyming poem about autumn leaves."),  # duplicate
    ("Sort a list.", "Sort a list."),  # unchanged
]

TRAIN_ARGS = ["--max-steps", "2", "--batch-size", "2", "--micro-batch-size", "2", "--max-length", "512",
              "--lr", "1e-3"]


def test_rewriter_train_from_jsonl_end_to_end(cli, tiny_model, tmp_path):
    source = tmp_path / "pairs.jsonl"
    source.write_text("".join(json.dumps({"instruction": a, "refined_instruction": b}) + "\n" for a, b in PAIRS))
    out = tmp_path / "rewriter-model"
    result = invoke(cli, ["rewriter", "train", "--base", str(tiny_model), "--out", str(out),
                          "--from-jsonl", str(source), *TRAIN_ARGS])
    assert f"pairs: 3 from jsonl:{source} (skipped: unchanged 1, duplicate 1)" in result.output
    assert f"model: {{model: 'hf:{out}'}}" in result.output
    meta = json.loads((out / "rewriter.json").read_text())
    assert meta["pairs"] == 3 and meta["steps"] == 2 and meta["rewriter_options"]["num_examples"] == 0
    assert not list(out.glob("checkpoint-*"))

    # The folder loads as a model, and as a later run's rewriter model (hf:PATH).
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(str(out)).config.vocab_size > 0
    from tapir.models import load_backend

    backend = load_backend(f"hf:{out}", {"batch_size": 2})
    rw = rewriter(backend, num_examples=0)
    item = Item("a", "Give two examples of birds.", task_type="Biology")
    params = GenerationParams(max_new_tokens=8)
    (completion,) = backend.generate([GenerationRequest(rw.refine_messages(item), params)])
    assert completion.ok and completion.completion_tokens
    (rewrite,) = rw.rewrite([item], teacher(FakeBackend(lambda m: "an enhanced answer")), params)
    # a random tiny model refines badly; either way the outcome is stated, never the original passed off
    assert rewrite.answer == "an enhanced answer" if rewrite.error is None else rewrite.answer == ""


def test_rewriter_train_reads_the_database(cli, tiny_model, tmp_path):
    from tapir.store import open_store

    db = tmp_path / "t.db"
    store = open_store(db)
    with store.db.conn:
        store["runs"].insert({"id": "run-1", "name": "demo", "status": "done"})
        store["stages"].insert({"run_id": "run-1", "name": "rewrite", "round": 1, "status": "done", "key": "stage-k1"})
        rows = [
            # run-1's pipeline rows carry the stage key in scope
            ("stage-k1", "a", *PAIRS[0], None), ("stage-k1", "b", *PAIRS[1], None),
            ("stage-k1", "c", "Broken one.", "", "refinement failed"),
            ("run-1", "d", *PAIRS[2], None),
            ("stage-other", "e", "Name a fruit.", "Name one fruit and describe its taste.", None),
        ]
        store["rewrites"].insert_all(
            [{"scope": r, "item_id": i, "rewriter": "task-aware", "round": 1, "instruction": a,
              "refined_instruction": b, "error": e} for r, i, a, b, e in rows])
    store.close()

    result = invoke(cli, ["--db", str(db), "rewriter", "train", "--base", str(tiny_model), "--out",
                          str(tmp_path / "x"), "--dry-run"])
    assert f"pairs: 4 from db:{db}" in result.output and not (tmp_path / "x").exists()
    result = invoke(cli, ["--db", str(db), "rewriter", "train", "--base", str(tiny_model), "--out",
                          str(tmp_path / "x"), "--run", "run-1", "--dry-run"])
    assert f"pairs: 3 from db:{db} run run-1" in result.output
    for ref in ("demo", "run-"):  # its name, a unique id prefix: as every command reads a run
        result = invoke(cli, ["--db", str(db), "rewriter", "train", "--base", str(tiny_model), "--out",
                              str(tmp_path / "x"), "--run", ref, "--dry-run"])
        assert f"pairs: 3 from db:{db} run run-1" in result.output
    result = invoke(cli, ["--db", str(db), "rewriter", "train", "--base", str(tiny_model), "--out",
                          str(tmp_path / "x"), "--run", "nosuch", "--dry-run"], code=2)
    assert "no run 'nosuch'" in result.output

    out = tmp_path / "lora-rewriter"
    result = invoke(cli, ["--db", str(db), "rewriter", "train", "--base", str(tiny_model), "--out", str(out),
                          "--run", "run-1", "--lora", "-o", "lora={r: 4, alpha: 8}", *TRAIN_ARGS])
    meta = json.loads((out / "rewriter.json").read_text())
    assert meta["pairs"] == 3 and meta["trainer_options"]["lora"] == {"r": 4, "alpha": 8}
    assert (out / "adapter").is_dir() and (out / "config.json").is_file()

    result = invoke(cli, ["--db", str(tmp_path / "none.db"), "rewriter", "train", "--base", str(tiny_model),
                          "--out", str(out)], code=2)
    assert "no database at" in result.output


def test_training_examples_use_the_zero_shot_refinement_prompt():
    from tapir_teachers.cli import training_examples
    from tapir_teachers.prompts import REFINE_SYSTEM

    (example,) = training_examples([("Do X.", "Do X in three steps.")])
    assert example.prompt == [{"role": "system", "content": REFINE_SYSTEM}, {"role": "user", "content": "Do X."}]
    assert example.response == "Do X in three steps." and example.weight == 1.0
    # ...which is exactly what the rewriter sends with num_examples=0.
    backend = FakeBackend(refiner_reply)
    rewriter(backend, num_examples=0).rewrite([Item("a", "Do X.")], teacher(FakeBackend(teacher_reply)), PARAMS)
    assert backend.requests[0].messages == example.prompt
