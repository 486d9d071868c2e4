"""Config errors: every mistake is ONE ConfigError line that names the file
and the key and says what is allowed, raised before anything is written."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from tapir import hookimpl
from tapir.config import PipelineConfig, load_config
from tapir.errors import ConfigError, TapirError
from tapir.plugins import get_plugin_manager, reset_plugin_manager
from tapir.tasks import TASK_TYPES


class FakeComponents:
    """Exactly one component per role, so 'Available:' lists are known."""

    @hookimpl
    def register_backends(self, register):
        register("fake", "json:dumps", description="a fake backend")

    @hookimpl
    def register_models(self, register):
        register("fake-alias", backend="fake", model="weights-v1", options={"dtype": "float32"})
        register("fake-gguf", backend="fake", model="weights-q4", requires=("tapir_no_such_gguf_reader",),
                 extra="local")

    @hookimpl
    def register_teachers(self, register):
        register("fake-teacher", "json:dumps")

    @hookimpl
    def register_judges(self, register):
        register("fake-judge", "json:dumps")
        register("gpu-judge", "json:dumps", requires=("tapir_no_such_gpu_lib",), extra="vllm")

    @hookimpl
    def register_classifiers(self, register):
        register("fake-classifier", "json:dumps")

    @hookimpl
    def register_rewriters(self, register):
        register("fake-rewriter", "json:dumps")

    @hookimpl
    def register_trainers(self, register):
        register("fake-trainer", "json:dumps")


@pytest.fixture(autouse=True)
def only_fake_plugins(monkeypatch):
    """No installed plugin loads (TAPIR_PLUGINS=''), only FakeComponents."""
    monkeypatch.setenv("TAPIR_PLUGINS", "")
    reset_plugin_manager()
    get_plugin_manager().register(FakeComponents(), name="fake-components")
    yield
    reset_plugin_manager()


VALID = """\
name: demo
data:
  path: data.jsonl
teacher:
  name: fake-teacher
  model:
    model: "fake:teacher-model"
student:
  model: "fake:student-model"
judge:
  name: fake-judge
  model:
    model: "fake:judge-model"
classifier:
  name: fake-classifier
trainer:
  name: fake-trainer
"""


@pytest.fixture
def write(tmp_path):
    (tmp_path / "data.jsonl").write_text('{"instruction": "hi", "output": "hello"}\n')

    def _write(text: str, name: str = "config.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return path

    return _write


def edit(old: str, new: str) -> str:
    assert old in VALID
    return VALID.replace(old, new)


def one_error(path: Path) -> str:
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert isinstance(exc.value, TapirError)
    msg = str(exc.value)
    assert "\n" not in msg, f"expected ONE message, got:\n{msg}"
    return msg


def test_valid_config_loads_into_typed_objects(write):
    config = load_config(write(VALID))
    assert isinstance(config, PipelineConfig)
    assert config.teacher.model.model == "fake:teacher-model"
    assert config.student.generation.max_new_tokens == 256
    assert config.curriculum.rounds == 3 and config.curriculum.alpha == 0.3
    assert config.mfd.delta == 2.0
    assert config.resample.weights == "paper"


def test_unknown_key(write):
    path = write(edit("  name: fake-judge\n", "  name: fake-judge\n  modle: x\n"))
    msg = one_error(path)
    assert msg == (f"{path}: unknown key 'judge.modle'. Did you mean 'model'? "
                   "Allowed here: model, name, options")


def test_unknown_top_level_key(write):
    path = write(VALID + "curriculm:\n  rounds: 2\n")
    msg = one_error(path)
    assert msg.startswith(f"{path}: unknown key 'curriculm'. Did you mean 'curriculum'? Allowed here: ")
    allowed = msg.split("Allowed here: ")[1].split(", ")
    assert {"classifier", "curriculum", "data", "db", "expansion", "judge", "mfd", "name"} <= set(allowed)
    assert allowed == sorted(allowed)


def test_unknown_nested_key_lists_that_level(write):
    path = write(edit('    model: "fake:teacher-model"\n',
                      '    model: "fake:teacher-model"\n    generation:\n      temprature: 0.7\n'))
    assert one_error(path) == (f"{path}: unknown key 'teacher.model.generation.temprature'. Did you mean "
                               "'temperature'? Allowed here: max_new_tokens, temperature, top_p")


def test_wrong_type(write):
    path = write(VALID + "curriculum:\n  rounds: three\n")
    msg = one_error(path)
    assert msg.startswith(f"{path}: 'curriculum.rounds': Input should be a valid integer")
    assert msg.endswith("(got 'three')")


def test_out_of_range(write):
    path = write(VALID + "curriculum:\n  alpha: 1.5\n")
    assert one_error(path) == f"{path}: 'curriculum.alpha': Input should be less than or equal to 1 (got 1.5)"


@pytest.mark.parametrize("key, value", [("curriculum:\n  alpha_step", ".inf"), ("budget:\n  max_cost_usd", ".inf"),
                                        ("budget:\n  per_role: {judge: .inf}\n  max_cost_usd", "1"),
                                        ("mfd:\n  delta", "-.inf"), ("budget:\n  max_cost_usd", ".nan")])
def test_infinity_and_nan_are_refused(write, key, value):
    """YAML's .inf passes a ``ge=0`` bound: a budget, a delta or a step of
    infinity is a typo, not a setting, and is refused like any bad value."""
    msg = one_error(write(VALID + f"{key}: {value}\n"))
    assert "Input should be a finite number" in msg


def test_wrong_choice_lists_the_choices(write):
    path = write(VALID + "expansion:\n  dedup: fuzzy\n")
    assert one_error(path) == (f"{path}: 'expansion.dedup': Input should be 'minhash', 'rouge', 'embedding' or 'none' "
                               "(got 'fuzzy')")


def test_wrong_type_in_a_union_is_one_message(write):
    path = write(VALID + "resample:\n  weights: 5\n")
    assert one_error(path) == (f"{path}: 'resample.weights': Input should be 'paper' or 'uniform', "
                               "or a valid dictionary (got 5)")


def test_wrong_value_inside_union_mapping(write):
    path = write(VALID + "resample:\n  weights:\n    Math: lots\n")
    msg = one_error(path)
    assert msg.startswith(f"{path}: 'resample.weights.Math': Input should be a valid number")


def test_section_of_wrong_type(write):
    path = write(edit("classifier:\n  name: fake-classifier\n", "classifier: fake-classifier\n"))
    msg = one_error(path)
    assert msg.startswith(f"{path}: 'classifier': Input should be a valid dictionary")


def test_missing_required_key(write):
    path = write(edit("judge:\n  name: fake-judge\n  model:\n    model: \"fake:judge-model\"\n", ""))
    # The key's one-line doc follows (one formatter with components' options, tapir.validation_messages).
    assert one_error(path) == (f"{path}: missing required key 'judge' (the judge of the MFD (teacher vs student "
                               "answers); its decoding is options.params (`tapir plugins NAME`), not model.generation)")


def test_missing_required_nested_key(write):
    path = write(edit("student:\n  model: \"fake:student-model\"\n", "student:\n  options: {}\n"))
    assert one_error(path).startswith(f"{path}: missing required key 'student.model' (a model id: ")


def test_invalid_yaml_names_the_line(write):
    path = write(edit("classifier:\n  name: fake-classifier\n", "classifier:\n  name: [fake-classifier\n"))
    msg = one_error(path)
    line = VALID.splitlines().index("classifier:") + 2  # 1-based, the line after 'classifier:'
    assert msg.startswith(f"{path} at line ")
    reported = int(msg.split(" at line ")[1].split(",")[0])
    assert line <= reported <= line + 2
    assert "not valid YAML" in msg


def test_tab_indentation_is_invalid_yaml(write):
    path = write("name: demo\ndata:\n\tpath: x\n")
    msg = one_error(path)
    assert msg.startswith(f"{path} at line 3, column 1: not valid YAML")


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "", "# only a comment\n"])
def test_top_level_not_a_mapping(write, text):
    path = write(text)
    assert one_error(path) == f"{path}: the top level must be a mapping of keys (name:, data:, teacher:, ...)"


def test_missing_config_file(tmp_path):
    path = tmp_path / "nope.yaml"
    msg = one_error(path)
    assert msg == f"config file not found: {path}. Pass the path of a YAML file (see configs/ for examples)."


def test_config_path_is_a_folder(tmp_path):
    assert one_error(tmp_path).startswith(f"config file not found: {tmp_path}")


def test_missing_data_file(write, tmp_path):
    path = write(edit("  path: data.jsonl\n", "  path: missing.jsonl\n"))
    assert one_error(path) == (f"{path}: 'data.path': file not found: missing.jsonl "
                               f"(relative paths are read from {tmp_path})")


def test_data_path_relative_to_the_config_file(write, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path.parent)  # not the config's folder
    assert load_config(write(VALID)).data.path == "data.jsonl"


def test_no_data_source(write):
    path = write(edit("data:\n  path: data.jsonl\n", "data: {}\n"))
    assert one_error(path) == f"{path}: 'data': give 'path' (a JSONL/JSON/CSV/parquet file) or 'hf_dataset'"


def test_unknown_judge_name(write):
    path = write(edit("  name: fake-judge\n", "  name: gpt4-judge\n"))
    assert one_error(path) == f"{path}: 'judge.name': unknown judge 'gpt4-judge'. Available: fake-judge, gpu-judge"


def test_unknown_teacher_classifier_trainer_rewriter(write):
    for old, new, expected in [
        ("  name: fake-teacher\n", "  name: nope\n", "'teacher.name': unknown teacher 'nope'. Available: fake-teacher"),
        ("  name: fake-classifier\n", "  name: nope\n",
         "'classifier.name': unknown classifier 'nope'. Available: fake-classifier"),
        ("  name: fake-trainer\n", "  name: nope\n", "'trainer.name': unknown trainer 'nope'. Available: fake-trainer"),
    ]:
        path = write(edit(old, new))
        assert one_error(path) == f"{path}: {expected}"
    path = write(VALID + "rewriter:\n  name: nope\n")
    assert one_error(path) == f"{path}: 'rewriter.name': unknown rewriter 'nope'. Available: fake-rewriter"


def test_unavailable_component(write):
    path = write(edit("  name: fake-judge\n", "  name: gpu-judge\n"))
    assert one_error(path) == (f"{path}: 'judge.name': judge 'gpu-judge' is unavailable: "
                               "needs tapir_no_such_gpu_lib (pip install 'tapir-distill[vllm]')")


@pytest.mark.parametrize("model_id", ["nosuchbackend:foo", "just-a-name", "openai/gpt-4o-mini"])
def test_unknown_model_id(write, model_id):
    # litellm is not loaded (TAPIR_PLUGINS=''), so no plugin takes provider/model ids either.
    path = write(edit('  model: "fake:student-model"\n', f'  model: "{model_id}"\n'))
    msg = one_error(path)
    assert msg.startswith(f"{path}: 'student.model': unknown model '{model_id}'. Named models: fake-alias, fake-gguf. ")
    assert "Or write BACKEND:NAME with a backend from: fake;" in msg
    assert "litellm plugin" in msg


def test_named_model(write):
    path = write(edit('  model: "fake:student-model"\n', '  model: fake-alias\n'))
    assert load_config(path).student.model == "fake-alias"


def test_unavailable_named_model(write):
    path = write(edit('  model: "fake:student-model"\n', '  model: fake-gguf\n'))
    assert one_error(path) == (f"{path}: 'student.model': model 'fake-gguf' is unavailable: "
                               "needs tapir_no_such_gguf_reader (pip install 'tapir-distill[local]')")


def test_unknown_model_id_in_a_role(write):
    path = write(edit('    model: "fake:judge-model"\n', '    model: "nosuch:judge"\n'))
    assert one_error(path).startswith(f"{path}: 'judge.model': unknown model 'nosuch:judge'.")


def test_unknown_task_type_in_resample_weights(write):
    path = write(VALID + "resample:\n  weights:\n    Math: 0.5\n    Maths: 0.5\n")
    assert one_error(path) == (f"{path}: 'resample.weights.Maths': unknown task type. "
                               f"Allowed: {', '.join(TASK_TYPES)}")


def test_known_task_types_in_resample_weights(write):
    path = write(VALID + "resample:\n  weights:\n    Math: 0.5\n    Code Debug: 0.5\n")
    assert load_config(path).resample.weights == {"Math": 0.5, "Code Debug": 0.5}


def test_every_problem_is_reported_at_once(write):
    path = write(edit("  name: fake-judge\n", "  name: nope\n").replace("data.jsonl", "missing.jsonl"))
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    lines = str(exc.value).splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"{path}: 'data.path': file not found")
    assert lines[1].startswith(f"{path}: 'judge.name': unknown judge 'nope'")


def test_check_references_can_be_skipped(write):
    path = write(edit("  name: fake-judge\n", "  name: nope\n"))
    assert load_config(path, check_references=False).judge.name == "nope"


# --- through the CLI: non-zero exit, nothing written -------------------------------


def test_cli_distill_with_bad_config_writes_nothing(write, tmp_path, monkeypatch):
    from tapir.cli import _add_commands, cli

    try:
        _add_commands()
    except Exception as exc:  # the lead is wiring `tapir distill`
        pytest.skip(f"CLI commands do not load yet: {exc!r}")
    if "distill" not in cli.commands:
        pytest.skip("no `tapir distill` command yet")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TAPIR_DB", raising=False)
    before = sorted(p.name for p in tmp_path.iterdir())
    for text in [edit("  name: fake-judge\n", "  name: nope\n"), VALID + "bogus_key: 1\n", "name: [\n"]:
        path = write(text, name="bad.yaml")
        before = sorted(p.name for p in tmp_path.iterdir())
        result = CliRunner().invoke(cli, ["distill", str(path)])
        assert result.exit_code != 0
        assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
        assert "Traceback" not in result.output
        assert f"Error: {path}" in result.output
        assert sorted(p.name for p in tmp_path.iterdir()) == before  # no tapir.db, no output folder
    result = CliRunner().invoke(cli, ["distill", str(tmp_path / "nope.yaml")])
    assert result.exit_code != 0 and "config file not found" in result.output
    assert not (tmp_path / "tapir.db").exists()


def test_named_model_resolves_to_its_backend_and_options():
    from tapir.models import resolve

    spec = resolve("fake-alias", {"device": "cpu"})
    assert (spec.model_id, spec.backend, spec.name) == ("fake-alias", "fake", "weights-v1")
    assert spec.options == {"dtype": "float32", "device": "cpu"}
    assert resolve("fake-alias", {"dtype": "float16"}).options == {"dtype": "float16"}  # the caller wins


@pytest.mark.parametrize("mfd, given, used", [
    ("  delta: 1.5\n  top_fraction: 0.5\n", "delta: 1.5 and top_fraction: 0.5", "top_fraction"),
    ("  delta: null\n  top_fraction: 0.5\n  quantile: 0.9\n", "top_fraction: 0.5 and quantile: 0.9", "top_fraction"),
    ("  delta: 2.0\n  quantile: 0.9\n", "delta: 2.0 and quantile: 0.9", "quantile"),
])
def test_two_seed_cuts_are_refused(write, mfd, given, used):
    """The cut reads top_fraction, else quantile, else delta: a second one
    given was ignored without a word."""
    path = write(VALID.replace("mfd:\n  delta: 2.0\n", "") + "mfd:\n" + mfd)
    first, last = given.split(" and ")[0].split(":")[0], given.split(" and ")[-1].split(":")[0]
    assert one_error(path) == (f"{path}: 'mfd': Value error, give one seed cut, not {given}: only {used} would be "
                               f"used. Keep one and set the other(s) to null (e.g. --set mfd.{first}=null to use "
                               f"{last})")


def test_top_fraction_with_the_default_delta_is_one_cut(write):
    path = write(VALID.replace("mfd:\n  delta: 2.0\n", "") + "mfd:\n  top_fraction: 0.5\n")
    assert load_config(path).mfd.top_fraction == 0.5


def test_data_path_and_hf_dataset_together_are_refused(write):
    path = write(edit("  path: data.jsonl\n", "  path: data.jsonl\n  hf_dataset: tatsu-lab/alpaca\n"))
    assert one_error(path) == (f"{path}: 'data': Value error, give 'path' or 'hf_dataset', not both (path: "
                               f"data.jsonl, hf_dataset: tatsu-lab/alpaca): only path would be read. Remove one")


def test_data_fields_key_that_tapir_does_not_read(write):
    """data.fields maps tapir's names to the data's columns: a misspelt (or
    reversed) key mapped nothing, silently."""
    path = write(edit("  path: data.jsonl\n", "  path: data.jsonl\n  fields: {instrucion: question}\n"))
    msg = one_error(path)
    assert msg.startswith(f"{path}: 'data.fields': Value error, unknown field 'instrucion' (the keys are tapir's "
                          f"field names, the values your columns, e.g. {{instruction: question}}). Did you mean "
                          f"'instruction'? Fields: id, instruction, input, output")


@pytest.mark.parametrize("repo_id, message", [
    ("not a repo id!!", "not a Hugging Face repo id: write 'user/name'"),
    ("me/a/b", "not a Hugging Face repo id"),
    ("me/-student", "not a Hugging Face repo id"),
    ("me/student-{r}", "only '{round}' may appear in braces, e.g. me/student-r{round}"),
])
def test_push_to_hub_repo_id_the_hub_would_refuse(write, repo_id, message):
    """The upload runs last, after every paid call: a repo id the hub
    refuses failed the run there."""
    path = write(VALID + f"export:\n  push_to_hub:\n    repo_id: '{repo_id}'\n")
    msg = one_error(path)
    assert msg.startswith(f"{path}: 'export.push_to_hub.repo_id': Value error, {message}"), msg


@pytest.mark.parametrize("repo_id", ["me/tiny", "me/tiny-r{round}", "tiny", "Org_1/my.model-v2"])
def test_push_to_hub_repo_ids_the_hub_takes(write, repo_id):
    assert load_config(write(VALID + f"export:\n  push_to_hub:\n    repo_id: '{repo_id}'\n")).export.push_to_hub


def test_empty_output_dir_is_refused(write):
    """An empty output_dir wrote checkpoints and exports into the working directory."""
    path = write(VALID + "output_dir: ''\n")
    assert one_error(path) == f"{path}: 'output_dir': Value error, must not be empty (got '')"


@pytest.mark.parametrize("weights, message", [
    ("{Math: 0.0}", "give at least one task type a weight above 0 (the weights are divided by their sum)"),
    ("{}", "give at least one task type a weight above 0 (the weights are divided by their sum)"),
    ("{Math: 1.0, Reasoning: -0.5}", "weights must be 0 or more, got Reasoning: -0.5"),
])
def test_resample_weights_that_eq3_cannot_use(write, weights, message):
    """Eq. 3 divides by the weights' sum: all zero failed the resample stage
    (ZeroDivisionError) after the paid stages before it."""
    path = write(VALID + f"resample:\n  weights: {weights}\n")
    assert one_error(path) == f"{path}: 'resample.weights': Value error, {message}"


def test_a_control_character_in_the_config_names_its_line(write):
    """PyYAML names a NUL byte by its position in the text only."""
    path = write(VALID.replace("name: demo", "name: de\x00mo"))
    assert one_error(path) == (f"{path} at line 1, column 9: not valid YAML: the control character U+0000 is not "
                               f"allowed (a binary or damaged file?). Remove it")


def test_yaml_nested_too_deeply_is_one_message(write):
    """PyYAML's composer recursed until Python gave up: 'Error: RecursionError' (exit 1)."""
    path = write("name: " + "[" * 100000 + "]" * 100000 + "\n")
    assert one_error(path) == (f"{path}: not usable YAML: lists or mappings nested too deeply to read. Fix the file "
                               f"(a config nests a few levels: section, key, value)")
    with pytest.raises(ConfigError, match="the value nests lists or mappings too deeply to read"):
        load_config(write(VALID), overrides=["name=" + "[" * 100000 + "]" * 100000])
