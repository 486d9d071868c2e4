"""One formatter of pydantic's errors (issue 18 item 4, "one copy of each
thing"): config files and components' declared options read the same,
differing only in their wording ("key" / "option")."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict, ValidationError

from tapir.config.validation import format_validation_error
from tapir.options import Options, option, option_problems

ROOT = Path(__file__).resolve().parents[1]


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")
    temperature: float = 0.0


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    sizes: list[int] | dict[str, int] = [1]
    params: Params = Params()
    api_key_env: str | None = None


class SectionOptions(Options):
    sizes: list[int] | dict[str, int] = option([1], "sizes, or sizes by name")
    params: Params | None = option(None, "sampling")
    api_key_env: str | None = option(None, "the variable that holds the key")


def config_lines(values: dict) -> list[str]:
    try:
        Section.model_validate(values)
    except ValidationError as exc:
        return format_validation_error(exc, Section, "c.yaml").split("\n")
    return []


def test_only_one_module_reads_pydantic_errors():
    readers = set()
    for path in [*(ROOT / "tapir").rglob("*.py"), *(ROOT / "plugins").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "errors"
                    and not node.args and not node.keywords):
                readers.add(path.relative_to(ROOT).as_posix())
    assert readers == {"tapir/validation_messages.py"}


def test_a_union_reads_as_one_problem_in_both():
    assert config_lines({"name": "x", "sizes": "many"}) == [
        "c.yaml: 'sizes': Input should be a valid list, or a valid dictionary (got 'many')"]
    assert option_problems(SectionOptions, {"sizes": "many"}, "c.yaml: 'judge.options'") == [
        "c.yaml: 'judge.options': option 'sizes': Input should be a valid list, or a valid dictionary (got 'many')"]


def test_a_list_element_is_named_by_its_index_in_both():
    assert config_lines({"name": "x", "sizes": [1, "b"]}) == [
        "c.yaml: 'sizes[1]': Input should be a valid integer, unable to parse string as an integer (got 'b')"]
    assert option_problems(SectionOptions, {"sizes": [1, "b"]}, "w") == [
        "w: option 'sizes[1]': Input should be a valid integer, unable to parse string as an integer (got 'b')"]


def test_unknown_keys_keep_their_wording():
    assert config_lines({"name": "x", "params": {"temprature": 1}}) == [
        "c.yaml: unknown key 'params.temprature'. Did you mean 'temperature'? Allowed here: temperature"]
    assert option_problems(SectionOptions, {"params": {"temprature": 1}}, "w") == [
        "w: unknown option 'params.temprature'. Did you mean 'temperature'? Allowed: temperature"]
    assert config_lines({}) == ["c.yaml: missing required key 'name'"]


def test_a_credential_is_refused_and_never_echoed_in_both():
    lines = config_lines({"name": "x", "api_key": "sk-very-secret"})
    assert lines == ["c.yaml: 'api_key' holds a credential: keys never go into a config (it is stored with the "
                     "run). Remove it and export the key as an environment variable instead with api_key_env "
                     "naming the variable (e.g. api_key_env: MY_KEY)"]
    options = option_problems(SectionOptions, {"hf_token": "hf_secret"}, "w")
    assert options == ["w: 'hf_token' holds a credential: keys never go into a config (it is stored with the run). "
                       "Remove it and export the key as an environment variable instead with api_key_env naming "
                       "the variable (e.g. api_key_env: MY_KEY)"]


def test_an_error_of_the_whole_config_names_no_empty_key(tmp_path):
    """A check across keys (student and students) was shown under the key
    '' ("c.yaml: '': Value error, ...")."""
    from tapir.config import load_config
    from tapir.errors import ConfigError

    path = tmp_path / "c.yaml"
    path.write_text("name: x\ndata: {path: d.jsonl}\nteacher: {name: default}\njudge: {name: pairwise}\n"
                    "classifier: {name: llm}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, check_references=False)
    assert str(err.value) == (f"{path}: Value error, give either 'student' (one model) or 'students' (a list of "
                              f"models), not both or none")
