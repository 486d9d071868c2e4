"""Preflight: every mistake found before the first paid call.

:func:`check` reads the config, builds nothing that costs, and collects every
problem at once: the config's shape, every component's options against its
declared ``Options`` (judges' and classifiers' ``params`` too), every model's
backend options against its backend's ``Options`` (no backend is built, no
model loaded), every model id (the student must be a trainable local model;
API models need their credentials; a local folder needs config.json and its
weights), the data file and each row against the trainer's ``max_length``
(:mod:`tapir.pipeline.rowfit`), the output folder and the database. Problems
raise one :class:`~tapir.errors.ConfigError` (exit 2); nothing is written and
nothing is called.

The dry run's plan of a checked config is :mod:`tapir.pipeline.dryrun`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tapir.config.loading import load_config
from tapir.config.schema import ModelRef, PipelineConfig
from tapir.errors import ConfigError, TapirError
from tapir.pipeline.rowfit import fit_rows

# Roles whose components always talk to a model.
_NEEDS_MODEL = {"teachers", "rewriters"}


@dataclass
class Checked:
    """A config that passed preflight, with what was read to check it."""

    config: PipelineConfig
    path: Path
    base_dir: Path
    loaded: Any  # the data's LoadReport
    db_path: Path


def check(config_path: str | Path | dict, db: str | None = None, overrides: list[str] | None = None,
          base_dir: Path | None = None) -> Checked:
    """``config_path``: a YAML file or a dict (its relative paths are read
    from ``base_dir``, default the working directory)."""
    from tapir.config.paths import config_base, resolve_path
    from tapir.config.validation import check_pipeline_references
    from tapir.pipeline.data import load_items
    from tapir.store.db import resolve_db_path

    kwargs = {"overrides": overrides} if overrides else {}
    config = load_config(config_path, check_references=False, **kwargs)  # shape and types: stop here if wrong
    source = "config" if isinstance(config_path, dict) else str(config_path)
    base_dir = base_dir or config_base(config_path)  # a dict's relative paths: from the working directory
    problems: list[str] = check_pipeline_references(config, base_dir, source)
    problems += component_problems(config, base_dir, source)
    problems += model_problems(config, source)
    loaded = None
    if config.data.hf_dataset or (config.data.path and resolve_path(config.data.path, base_dir).exists()):
        try:
            loaded = load_items(config.data, base_dir, config.seed)
        except TapirError as exc:
            problems.append(str(exc))
        else:
            loaded, too_long = fit_rows(config, loaded, base_dir)  # rows the trainer could not train on
            problems += too_long
    problems += heldout_problems(config, base_dir, source)
    problems += output_problems(config, source)
    db_path = resolve_db_path(db or config.db)
    problems += store_problems(db_path)
    if problems:
        raise ConfigError("\n".join(dict.fromkeys(problems)))
    return Checked(config, None if isinstance(config_path, dict) else Path(config_path), base_dir, loaded,
                   db_path)


def component_problems(config: PipelineConfig, base_dir: Path, source: str) -> list[str]:
    """Every component's options against its declared schema, and the model
    it needs."""
    from tapir.config.paths import resolve_path
    from tapir.options import input_files, output_folders
    from tapir.plugins import registry

    reg = registry()
    problems: list[str] = []

    def check_role(role: str, key: str, name: str, options: dict, model: ModelRef | None):
        if name not in reg.by_role[role] or not reg.by_role[role][name].available:
            return  # reported by the config's reference check
        component = reg.get(role, name)
        problems.extend(component.check_options(options, f"{source}: '{key}.options'"))
        component.load()  # an import error is reported here
        if role not in _NEEDS_MODEL and "needs_model" not in component.flags:
            problems.append(f"{source}: '{key}.name': {role[:-1]} '{name}' ({component.plugin}) does not declare "
                            f"needs_model, which tapir.roles asks of every {role[:-1]}; update the plugin")
            return
        if model is None and (role in _NEEDS_MODEL or component.flags["needs_model"]):
            problems.append(f"{source}: '{key}': {role[:-1]} '{name}' needs a model: add {key}.model "
                            f"(e.g. model: openai/gpt-4o-mini, or a local folder)")
        elif model is not None and role not in _NEEDS_MODEL and not component.flags["needs_model"]:
            # The component is built without it: the model the user meant to use was ignored.
            problems.append(f"{source}: '{key}.model': {role[:-1]} '{name}' calls no model, so {key}.model "
                            f"({model.model}) would be ignored. Remove {key}.model, or pick a {role[:-1]} that "
                            f"calls one (`tapir plugins` lists them)")

    cfg = config
    for key, ref in (("judge", cfg.judge.model), ("classifier", cfg.classifier.model)):
        if ref is not None and "generation" in ref.model_fields_set:
            problems.append(f"{source}: '{key}.model.generation': the {key} sets its own generation parameters, "
                            f"so this would be ignored; use {key}.options.params (see `tapir plugins "
                            f"{getattr(cfg, key).name}`)")
    check_role("teachers", "teacher", cfg.teacher.name, cfg.teacher.options, cfg.teacher.model)
    check_role("judges", "judge", cfg.judge.name, cfg.judge.options, cfg.judge.model)
    classifier_options = dict(cfg.classifier.options)
    check_role("classifiers", "classifier", cfg.classifier.name, classifier_options, cfg.classifier.model)
    # The files a classifier reads (its options declared InputFile; the run reads them from the config's folder).
    classifier = reg.by_role["classifiers"].get(cfg.classifier.name)
    resolved = dict(classifier_options)
    missing = False
    for key in input_files(classifier.options_model()) if classifier is not None else ():
        value = classifier_options.get(key)
        if value and not resolve_path(str(value), base_dir).exists():
            missing = True
            problems.append(f"{source}: 'classifier.options.{key}': file not found: {value} "
                            f"(relative paths are read from {base_dir})")
        elif value:
            resolved[key] = str(resolve_path(str(value), base_dir))
    for key in output_folders(classifier.options_model()) if classifier is not None else ():
        value = classifier_options.get(key)
        folder = resolve_path(str(value), base_dir) if value else None
        if folder is not None and folder.exists() and not folder.is_dir():
            problems.append(f"{source}: 'classifier.options.{key}': {value} is a file, not a folder; point it at "
                            f"a folder (a trained classifier's, or a new one to train into)")
    if classifier is not None and not missing:  # the files' content, as the classify stage reads them
        from tapir.capabilities import input_problems

        problems += [f"{source}: 'classifier.options': {p}"
                     for p in input_problems("classifiers", cfg.classifier.name, resolved)]
    if cfg.rewriter is not None:
        check_role("rewriters", "rewriter", cfg.rewriter.name, cfg.rewriter.options, cfg.rewriter.model)
    if cfg.trainer.name in reg.by_role["trainers"] and reg.by_role["trainers"][cfg.trainer.name].available:
        problems.extend(reg.get("trainers", cfg.trainer.name).check_options(
            cfg.trainer.options, f"{source}: 'trainer.options'"))
    if cfg.expansion.dedup == "embedding" and cfg.expansion.encoder not in reg.by_role["encoders"]:
        known = ", ".join(reg.names("encoders")) or "none installed"
        problems.append(f"{source}: 'expansion.encoder': unknown encoder '{cfg.expansion.encoder}'. Available: {known}")
    for i, ref in enumerate(cfg.evaluation.benchmarks):
        problems.extend(benchmark_problems(reg, ref, cfg.student.model, f"{source}: 'evaluation.benchmarks[{i}]'"))
    for extra in cfg.recipe.add:
        if extra.stage not in reg.by_role["stages"]:
            known = ", ".join(reg.names("stages")) or "none installed"
            problems.append(f"{source}: 'recipe.add': unknown stage '{extra.stage}'. Plugin stages: {known}")
    return problems


def benchmark_problems(reg, ref, student_model: str, where: str) -> list[str]:
    """A configured benchmark: a known evaluator, valid options, and its own
    preflight (judge keys, data) on the base student, before any paid call."""
    if ref.name not in reg.by_role["evaluators"] or not reg.by_role["evaluators"][ref.name].available:
        known = ", ".join(reg.names("evaluators")) or "none installed"
        return [f"{where}: unknown benchmark '{ref.name}'. Available: {known}"]
    component = reg.get("evaluators", ref.name)
    problems = component.check_options(ref.options, f"{where}.options")
    if problems:
        return problems
    try:
        evaluator = component.create(options=dict(ref.options), where=f"{where}.options")
        return [f"{where}: {ref.name}: {p}" for p in evaluator.preflight(student_model) or []]
    except TapirError as exc:
        return [f"{where}: {ref.name}: {exc}"]


def model_problems(config: PipelineConfig, source: str) -> list[str]:
    """Every model id resolves; the student to a trainable local model; API
    models have their credentials (named by variable)."""
    from tapir.bench import model_problems as call_problems
    from tapir.models import backend_flag, resolve

    problems: list[str] = []
    roles = [("teacher", config.teacher.model), ("judge", config.judge.model),
             ("classifier", config.classifier.model)]
    if config.rewriter is not None:
        roles.append(("rewriter", config.rewriter.model))
    for key, ref in roles:
        if ref is None:
            continue
        try:
            resolve(ref.model, ref.options)
        except TapirError:
            continue  # an unknown model: the config's reference check reports it (once)
        option_errors = backend_option_problems(ref.model, ref.options, f"{source}: '{key}.model.options'",
                                                f"{key}.model.generation")
        problems += option_errors
        if not option_errors:  # credentials are read from valid options only
            problems += [f"{source}: '{key}.model': {p}" for p in call_problems(ref.model, ref.options, what="model")]
        problems += folder_problems(ref.model, ref.options, f"{source}: '{key}.model'")
    for i, student in enumerate([config.student] if config.student else config.students):
        key = "student" if config.student else f"students[{i}]"
        try:
            spec = resolve(student.model, student.options)
        except TapirError as exc:
            problems.append(f"{source}: '{key}.model': {exc}")
            continue
        problems += backend_option_problems(student.model, student.options, f"{source}: '{key}.options'",
                                            f"{key}.generation")
        if student.serve is not None:  # placeholders ({checkpoint}, {port}) are text of the right type
            serve_errors = serve_problems(student.serve, f"{source}: '{key}.serve")
            problems += serve_errors
            if serve_errors:
                continue
            problems += backend_option_problems(student.serve.model, student.serve.options,
                                                f"{source}: '{key}.serve.options'", f"{key}.generation")
            if student.serve.launch:
                problems += launch_problems(student.serve, f"{source}: '{key}.serve.model'")
        problems += folder_problems(student.model, student.options, f"{source}: '{key}.model'")
        if not backend_flag(spec.backend, "trainable"):
            hint = ""
            if "/" in student.model and not student.model.startswith("hf:"):
                hint = f" Did you mean hf:{student.model}?"
            problems.append(
                f"{source}: '{key}.model': '{student.model}' resolves to backend '{spec.backend}', but the "
                f"student is trained here: it must be a local transformers model (a folder, a named local model, "
                f"or hf:org/name for a hub id).{hint}")
    return problems


def serve_problems(serve: Any, where: str) -> list[str]:
    """``student.serve``: only the placeholders the serving code fills
    ({checkpoint}, {port}; {replica} in launch), a model id that resolves to
    an installed backend, a launch command that splits into words. Each
    was found when the first checkpoint was served, after S0 was trained."""
    import shlex

    from tapir.models import resolve
    from tapir.pipeline.serving import fill_placeholders
    from tapir.plugins import registry

    names = {"checkpoint": "/checkpoint", "port": 8000}
    problems: list[str] = []
    filled: dict[str, Any] = {}
    for key, value, extra in (("model", serve.model, {}), ("options", serve.options, {}),
                              ("launch", serve.launch, {"replica": 0})):
        try:
            filled[key] = fill_placeholders(value, **names, **extra)
        except (KeyError, IndexError, ValueError) as exc:
            allowed = "{checkpoint}, {port}" + (" and {replica}" if key == "launch" else "")
            problems.append(f"{where}.{key}': {exc} is not a placeholder tapir fills (only {allowed}); "
                            f"write {{{{ and }}}} for a literal brace")
            continue
        if key == "launch" and filled[key] is not None:
            try:
                shlex.split(filled[key])
            except ValueError as exc:
                problems.append(f"{where}.launch': not a command line ({exc}); close the quote")
    if problems:
        return problems
    try:
        spec = resolve(filled["model"], filled["options"])
    except TapirError as exc:
        return [f"{where}.model': {exc}"]
    table = registry().by_role["backends"]
    if spec.backend not in table:
        return [f"{where}.model': '{serve.model}' names backend '{spec.backend}', which is not installed. "
                f"Available: {', '.join(sorted(table)) or 'none'}"]
    if not table[spec.backend].available:
        return [f"{where}.model': backend '{spec.backend}' is unavailable: {table[spec.backend].reason}"]
    return []


def launch_problems(serve: Any, where: str) -> list[str]:
    """A launched server needs a backend that can be sent to it (its
    ``served_at`` capability); an unknown model or backend is reported with
    the model id."""
    from tapir.models import resolve
    from tapir.pipeline.serving import served_component
    from tapir.plugins import registry

    try:
        if resolve(serve.model, serve.options).backend not in registry().by_role["backends"]:
            return []
    except TapirError:
        return []
    try:
        served_component(serve.model, serve.options)
    except TapirError as exc:
        return [f"{where}: {exc}"]
    return []


def backend_option_problems(model_id: str, options: dict[str, Any], where: str, generation_key: str) -> list[str]:
    """A model's backend options against the backend's declared ``Options``
    (nothing is built, loaded or called). Sampling parameters written among
    them are pointed to ``generation_key``."""
    import difflib

    from tapir.config.schema import Generation
    from tapir.models import resolve
    from tapir.plugins import registry

    try:
        spec = resolve(model_id, options)
    except TapirError:
        return []  # reported with the model id
    table = registry().by_role["backends"]
    if spec.backend not in table:
        return []  # reported by the reference check
    component = table[spec.backend]
    try:
        allowed = set(component.options_model().model_fields)
    except Exception:  # noqa: BLE001 - a plugin that cannot even be imported is reported as unavailable
        return []
    problems: list[str] = []
    rest = dict(spec.options)
    for key in list(options or {}):
        if key in allowed:
            continue
        close = difflib.get_close_matches(str(key), list(Generation.model_fields), n=1, cutoff=0.75)
        if close:
            rest.pop(key, None)
            problems.append(f"{where}: '{key}' is not an option of the {spec.backend} backend: sampling "
                            f"parameters go under {generation_key} (e.g. {generation_key}.{close[0]}); "
                            f"the backend's options are: {', '.join(sorted(allowed)) or 'none'}")
    return problems + component.check_options(rest, where)


# Weight files transformers loads from a folder (the index names the shards).
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json",
                "pytorch_model.bin.index.json", "tf_model.h5", "flax_model.msgpack")


def folder_problems(model_id: str, options: dict[str, Any], where: str) -> list[str]:
    """A local model folder (``hf:PATH``, ``vllm:PATH`` or a path) holds a
    readable config.json and its weights; nothing is loaded. Hub ids
    (``org/name``) are left to the backend."""
    import json

    from tapir.models import backend_flag, resolve

    try:
        spec = resolve(model_id, options)
    except TapirError:
        return []
    if not backend_flag(spec.backend, "local_weights"):
        return []
    name = spec.name
    folder = Path(name).expanduser()
    looks_local = name.startswith(("/", ".", "~")) or name.count("/") > 1 or folder.exists()
    if not looks_local:
        return []  # a hub id (or a named model the backend knows)
    if not folder.exists():
        return [f"{where}: no folder {folder}: '{model_id}' names a local model folder that does not exist. "
                f"Fix the path (a folder with config.json and the weights), or write hf:ORG/NAME for a hub model"]
    if not folder.is_dir():
        return [f"{where}: {folder} is a file, not a model folder; point at the folder that holds config.json"]
    config = folder / "config.json"
    if not config.is_file():
        if (folder / "adapter_config.json").is_file():
            return []  # a PEFT adapter: its base model is read from adapter_config.json
        return [f"{where}: {folder} holds no config.json, so it is not a transformers model. Point at the "
                f"folder that has config.json (e.g. a checkpoint's)"]
    try:
        loaded = json.loads(config.read_text(encoding="utf-8"))
        if not isinstance(loaded, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as exc:
        return [f"{where}: {config} is not readable JSON ({exc}); write the model folder again "
                f"(save_pretrained) or fix the file"]
    present = [f for f in WEIGHT_FILES if (folder / f).is_file()]
    sharded = sorted(folder.glob("model-*.safetensors")) + sorted(folder.glob("pytorch_model-*.bin"))
    if not present and not sharded and not any(folder.glob("*.gguf")):
        return [f"{where}: {folder} has config.json but no weights: none of {', '.join(WEIGHT_FILES[:2])} "
                f"(or a sharded model's index) is there. Copy the weights into the folder, or point at the "
                f"checkpoint that has them"]
    for index_name in (f for f in present if f.endswith(".index.json")):
        index = folder / index_name
        try:
            shards = set(json.loads(index.read_text(encoding="utf-8")).get("weight_map", {}).values())
        except (OSError, ValueError, AttributeError) as exc:
            return [f"{where}: {index} is not readable JSON ({exc}); write the model folder again"]
        missing = sorted(s for s in shards if not (folder / s).is_file())
        if missing:
            more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
            return [f"{where}: {folder} is missing weight file {missing[0]}{more} (listed in {index_name}); "
                    f"copy the missing shard(s) into the folder"]
    return []


def heldout_problems(config: PipelineConfig, base_dir: Path, source: str) -> list[str]:
    """``evaluation.heldout``: its file is read as the heldout_answers stage
    reads it (after S0 is trained and paid for), so a missing or unreadable
    file, or one with no row left after ``skip``, is found here."""
    from tapir.config.paths import resolve_path
    from tapir.config.schema import DataConfig
    from tapir.pipeline.data import load_items

    heldout = config.evaluation.heldout
    if heldout is None:
        return []
    where = f"{source}: 'evaluation.heldout.path'"
    path = resolve_path(heldout.path, base_dir)
    if not path.exists():
        return [f"{where}: file not found: {heldout.path} (relative paths are read from {base_dir}). "
                f"Fix evaluation.heldout.path, or remove evaluation.heldout"]
    try:
        report = load_items(DataConfig(path=heldout.path, limit=heldout.skip + heldout.limit), base_dir)
    except TapirError as exc:
        return [f"{where}: {exc}"]
    if len(report.items) <= heldout.skip:
        return [f"{where}: {path} has {len(report.items)} usable row(s), and evaluation.heldout.skip: "
                f"{heldout.skip} skips them all. Lower evaluation.heldout.skip, or give a longer file"]
    return []


def output_problems(config: PipelineConfig, source: str) -> list[str]:
    out = Path(config.output_dir).expanduser()
    probe = out
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        return [f"{source}: 'output_dir': {probe} is a file, not a folder; choose another output_dir"]
    from tapir.store.db import writable_folder

    # Asked of the file system (a probe file, removed at once): os.access says yes to root on a
    # read-only mount or in /proc, and the run failed after the database was written.
    if probe.exists() and not writable_folder(probe):
        return [f"{source}: 'output_dir': {probe} is not writable; choose another output_dir"]
    return []


def store_problems(db_path: Path) -> list[str]:
    try:
        from tapir.store.db import check_store
    except ImportError:  # pragma: no cover - older store module
        return []
    return list(check_store(db_path))


# --------------------------------------------------------------------------- the plan
