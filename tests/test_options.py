"""The shared option types of tapir.options: CommaList, JsonDict and
GenerationOverrides (every judge's and classifier's ``params``)."""

from __future__ import annotations

import pytest

from tapir.errors import ConfigError
from tapir.options import CommaList, GenerationOverrides, JsonDict, Options, generation_params, option, validate
from tapir.plugins import registry
from tapir.roles import GenerationParams


class _Listy(Options):
    names: CommaList = option(None, "names")
    extra: JsonDict = option(dict, "a mapping", factory=True)


@pytest.mark.parametrize("given,expected", [
    ("a, b,,c", ["a", "b", "c"]), ('["x", "y"]', ["x", "y"]), (["p ", "q"], ["p", "q"]), ("", None),
    (None, None), (81, ["81"]), ("[not json", ["[not json"]),
])
def test_comma_list(given, expected):
    assert _Listy.model_validate({"names": given}).names == expected


def test_json_dict_reads_a_json_object_string_and_refuses_other_text():
    assert _Listy.model_validate({"extra": '{"api_base": "http://h:1/v1"}'}).extra == {"api_base": "http://h:1/v1"}
    assert _Listy.model_validate({"extra": ""}).extra == {}
    with pytest.raises(ConfigError, match=r"where: option 'extra': Input should be a valid dictionary"):
        validate(_Listy, {"extra": "api_base=x"}, "where")


def test_generation_overrides_keep_defaults_for_what_is_unset():
    params = generation_params({"max_new_tokens": 512, "temperature": 0.0}, {"temperature": 0.7, "stop": "END,###"})
    assert params == GenerationParams(max_new_tokens=512, temperature=0.7, stop=("END", "###"))
    assert generation_params({"max_new_tokens": 1}, None) == GenerationParams(max_new_tokens=1)
    assert GenerationOverrides(seed=3).apply({}) == GenerationParams(seed=3)


def test_generation_overrides_are_checked_with_their_own_keys():
    with pytest.raises(ConfigError) as exc:
        validate(GenerationOverrides, {"temprature": 1, "top_p": 0, "max_new_tokens": 0}, "w")
    assert set(str(exc.value).splitlines()) == {
        "w: unknown option 'temprature'. Did you mean 'temperature'? Allowed: max_new_tokens, seed, stop, "
        "temperature, top_logprobs, top_p",
        "w: option 'top_p': Input should be greater than 0 (got 0)",
        "w: option 'max_new_tokens': Input should be greater than or equal to 1 (got 0)",
    }


@pytest.mark.parametrize("role,name", [("judges", "pairwise"), ("judges", "preference"),
                                       ("judges", "mtbench-single"), ("classifiers", "llm")])
def test_every_params_option_is_generation_overrides(pm, role, name):
    model = registry().get(role, name).options_model()
    assert model.model_fields["params"].annotation == GenerationOverrides | None
    problems = registry().get(role, name).check_options(
        {"params": {"max_new_tokns": 4}, **({"judge_mode": "robust"} if name == "mtbench-single" else {})}, "w")
    assert problems == ["w: unknown option 'params.max_new_tokns'. Did you mean 'max_new_tokens'? Allowed: "
                        "max_new_tokens, seed, stop, temperature, top_logprobs, top_p"]


def test_mtbench_single_reference_mode_refuses_params_in_options(pm):
    problems = registry().get("judges", "mtbench-single").check_options({"params": {"temperature": 0.5}}, "w")
    assert len(problems) == 1 and "params change FastChat's request or parser" in problems[0]


def test_a_credential_is_refused_without_echoing_it(pm):
    problems = registry().get("backends", "litellm").check_options({"api_key": "sk-abc123"}, "w")
    assert problems == ["w: 'api_key' holds a credential: keys never go into a config (it is stored with the run). "
                        "Remove it and export the key as an environment variable instead with api_key_env naming "
                        "the variable (e.g. api_key_env: MY_KEY)"]
    assert registry().get("backends", "litellm").check_options({"api_key_env": "MY_KEY"}, "w") == []


def test_input_files_are_found_by_their_declared_type(pm):
    """Preflight checks a classifier's files by the option type InputFile,
    not by an option name the core knows."""
    from tapir.options import InputFile, Options, input_files, option

    class Opts(Options):
        labels: InputFile | None = option(None, "a file")
        required_file: InputFile = option("x.jsonl", "another")
        name: str | None = option(None, "not a file")

    assert input_files(Opts) == ["labels", "required_file"]
    for name in ("llm", "encoder", "centroid"):
        assert input_files(pm.registry.get("classifiers", name).options_model()) == ["labels_path"], name


def test_output_folders_are_found_by_their_declared_type():
    from tapir.options import OutputFolder, input_files, output_folders

    class Opts(Options):
        model_dir: OutputFolder | None = option(None, "where the trained model goes")
        cache: str | None = option(None, "a plain string")

    assert output_folders(Opts) == ["model_dir"]
    assert input_files(Opts) == []


def test_the_pipeline_gives_a_classifiers_output_folder_a_place_among_the_runs_outputs(tmp_path):
    from tapir.config.schema import RoleConfig
    from tapir.pipeline.context import Context

    ctx = Context.__new__(Context)
    ctx.base_dir, ctx.out_dir = tmp_path / "cfg", tmp_path / "out"
    captured = {}
    ctx._role = lambda role, name, model, options: captured.update(options) or "built"
    assert ctx._classifier(RoleConfig(name="encoder", options={"labels_path": "labels.jsonl"})) == "built"
    assert captured == {"labels_path": str(tmp_path / "cfg" / "labels.jsonl"),
                        "model_dir": str(tmp_path / "out" / "classifier")}


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
def test_component_options_refuse_infinity_and_nan(value):
    """A rate limit, a timeout, a price or a learning rate of infinity would
    reach the first paid call (or the first training step) unnoticed."""
    from tapir_litellm.backend import LiteLLMBackend

    for key in ("rpm", "timeout", "input_usd_per_million"):
        with pytest.raises(ConfigError, match="finite number"):
            validate(LiteLLMBackend.Options, {key: value}, "teacher.model.options")
