"""Preflight: every mistake found before the first paid call, and the plan.

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

:func:`plan` turns a checked config into the dry run: the stages in order,
which would be reused, LLM calls per role and round, estimated tokens and
cost from each model's backend (its ``price`` capability; assumptions
printed), and training examples and steps per round (the trainer's
``steps_for``). What a component knows about itself (a judge that asks twice
per pair, a rewriter that also asks the teacher) comes from its ``estimate``
capability (tapir.roles.CAPABILITIES): nothing here names a plugin.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tapir.capabilities import estimate, generation, price, steps_for
from tapir.config.loading import load_config
from tapir.config.schema import ModelRef, PipelineConfig
from tapir.errors import ConfigError, TapirError
from tapir.pipeline.rowfit import fit_rows
from tapir.roles import CallEstimate

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
    from tapir.options import input_files
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
    for key in input_files(classifier.options_model()) if classifier is not None else ():
        value = classifier_options.get(key)
        if value and not resolve_path(str(value), base_dir).exists():
            problems.append(f"{source}: 'classifier.options.{key}': file not found: {value} "
                            f"(relative paths are read from {base_dir})")
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


def output_problems(config: PipelineConfig, source: str) -> list[str]:
    out = Path(config.output_dir).expanduser()
    probe = out
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        return [f"{source}: 'output_dir': {probe} is a file, not a folder; choose another output_dir"]
    if probe.exists() and not os.access(probe, os.W_OK | os.X_OK):
        return [f"{source}: 'output_dir': {probe} is not writable; choose another output_dir"]
    return []


def store_problems(db_path: Path) -> list[str]:
    try:
        from tapir.store.db import check_store
    except ImportError:  # pragma: no cover - older store module
        return []
    return list(check_store(db_path))


# --------------------------------------------------------------------------- the plan


@dataclass
class PlannedStage:
    label: str
    key: str
    action: str  # reuse | run | ...
    calls: dict[str, int] = field(default_factory=dict)  # role -> calls
    examples: int | None = None
    steps: int | None = None


@dataclass
class Plan:
    stages: list[PlannedStage]
    calls: dict[tuple[str, str], int]  # (role, model) -> calls
    tokens: dict[tuple[str, str], tuple[int, int]]  # (role, model) -> (input, output) tokens
    prices: dict[tuple[str, str], float | None]  # (role, model) -> estimated $ (None: no price known)
    assumptions: list[str]
    sizes: dict[str, int]


def plan(checked: Checked, retry: bool = True, known: frozenset[str] | set[str] = frozenset()) -> Plan:
    """The dry run: nothing written, nothing called. ``known``: stage keys an
    earlier run of the same study computes first (``tapir study``): planned
    as reused, their calls not counted again."""
    from tapir.pipeline.run_engine import planning_engine

    cfg = checked.config
    engine = planning_engine(checked, retry)
    items = checked.loaded.items if checked.loaded else []
    n = len(items)
    mean_words = (sum(len(it.prompt.split()) for it in items) / n) if n else 50.0
    in_tokens = int(mean_words * 1.35) + 40
    assumptions = [f"{n} working instructions of ~{in_tokens} prompt tokens each (words x 1.35 + template)"]
    if cfg.curriculum.seed_size is not None:
        seed = min(cfg.curriculum.seed_size, n)
        assumptions.append(f"the seed cut keeps seed_size = {seed} items (the cap; the real count depends on the MFD)")
    elif cfg.mfd.top_fraction is not None:
        seed = max(1, round(cfg.mfd.top_fraction * n))
    else:
        seed = n // 2
        assumptions.append(f"the seed cut keeps about half the items ({seed}); the real count depends on the MFD")
    assumptions.append("each answer uses its role's max_new_tokens x 0.6; expansion asks 1.2 times per draw "
                       "(malformed and duplicate replies are asked again)")
    sizes = {"seed": seed}
    hard = seed
    calls: dict[tuple[str, str], int] = {}
    tokens: dict[tuple[str, str], tuple[int, int]] = {}
    stages: list[PlannedStage] = []

    # A judge and a classifier sample as their generation capability says with
    # their options (what the run passes to the component; their model's
    # generation is refused).
    reply_length: dict[str, int | None] = {}
    for role, role_cfg in (("judge", cfg.judge), ("classifier", cfg.classifier)):
        params = generation(f"{role}s", role_cfg.name, role_cfg.options)
        reply_length[role] = params.max_new_tokens if params is not None else None
        if role_cfg.model is None:
            continue
        if params is not None:
            assumptions.append(f"the {role}'s replies: up to {params.max_new_tokens} tokens, as it asks with its "
                               f"options")
        else:
            assumptions.append(f"the {role}'s replies: their length is not known before it is built ({role} "
                               f"'{role_cfg.name}' does not say: tapir.roles.Sampling); assumed "
                               f"{role_cfg.model.generation.max_new_tokens}")

    def add(role: str, ref: ModelRef | None, count: int, prompt_tokens: int, planned: PlannedStage,
            per_item: int | float = 1, reply_tokens: int | None = None):
        """``count`` calls (``per_item`` per item handled); a node the run resumes
        ("retry failures") asks only its items a re-run retries (engine.resumed_calls).
        ``reply_tokens``: the max_new_tokens these calls are sent with, when
        not the role's own (expansion samples with expansion.generation)."""
        if planned.action == "retry failures":
            # A fresh draw or a failed call is one request per call (no over-asking estimate).
            count = engine.resumed_calls(planned.key, round(count / per_item)) * (
                per_item if isinstance(per_item, int) else 1)
        if ref is None or count <= 0:
            return
        key = (role, ref.model)
        calls[key] = calls.get(key, 0) + count
        out = int((reply_tokens or reply_length.get(role) or ref.generation.max_new_tokens) * 0.6)
        i, o = tokens.get(key, (0, 0))
        tokens[key] = (i + count * prompt_tokens, o + count * out)
        planned.calls[role] = planned.calls.get(role, 0) + count

    refs = {"teacher": cfg.teacher.model, "judge": cfg.judge.model, "classifier": cfg.classifier.model,
            "rewriter": cfg.rewriter.model if cfg.rewriter is not None else None}
    rounds_examples: dict[int, int] = {}
    for step, key, action in engine.plan():
        if key in known and action != "reuse":
            action = "reuse (earlier run)"
        planned = PlannedStage(step.label, key, action)
        stages.append(planned)
        if action.startswith("reuse"):
            continue
        r = step.round
        if step.stage == "teacher_answers":
            count = n if r == 0 else cfg.curriculum.expand_per_round[r - 1]
            if not (cfg.data.use_dataset_answers and r == 0):
                add("teacher", cfg.teacher.model, count, in_tokens, planned)
        elif step.stage == "heldout_answers" and cfg.evaluation.heldout is not None:
            add("teacher", cfg.teacher.model, cfg.evaluation.heldout.limit, in_tokens, planned,  # at most
                reply_tokens=cfg.evaluation.heldout.max_new_tokens)
        elif step.stage == "judge":
            for e in estimate("judges", cfg.judge.name, cfg.judge.options, "judge", n, in_tokens,
                              CallEstimate("judge", n, 2 * in_tokens + 300)):
                add(e.role, refs.get(e.role), e.calls, e.prompt_tokens, planned, _per_item(e.calls, n))
        elif step.stage == "classify":
            add("classifier", cfg.classifier.model, n, in_tokens + 400, planned)
        elif step.stage == "expand":
            add("teacher", cfg.teacher.model, int(cfg.curriculum.expand_per_round[r - 1] * 1.2), in_tokens + 250,
                planned, 1.2, reply_tokens=cfg.expansion.generation.max_new_tokens)
        elif step.stage == "rewrite":
            count = (hard if r == 1 else 0) + cfg.curriculum.expand_per_round[r - 1]
            for e in estimate("rewriters", cfg.rewriter.name, cfg.rewriter.options, "rewrite", count, in_tokens,
                              CallEstimate("rewriter", count, 2 * in_tokens)):
                add(e.role, refs.get(e.role), e.calls, e.prompt_tokens, planned)
        elif step.stage == "train":
            if r == 0:
                examples = n
            else:
                from tapir.pipeline.stages.train import alpha_for, group_weights

                hard += cfg.curriculum.expand_per_round[r - 1]
                alpha = alpha_for(r, cfg.curriculum.alpha, cfg.curriculum.alpha_step)
                w_hard, w_easy = group_weights(hard, n - seed, alpha, cfg.curriculum.weighting)
                examples = (hard if w_hard > 0 else 0) + (n - seed if w_easy > 0 else 0)  # weight 0: left out
                sizes[f"round {r} hard"] = hard
            rounds_examples[r] = examples
            planned.examples = examples
            planned.steps = (cfg.curriculum.max_steps if r > 0 and cfg.curriculum.max_steps is not None
                             else steps_for(cfg, examples))
    if cfg.curriculum.sampling == "task" and any(r > 0 for r in rounds_examples):
        assumptions.append("curriculum.sampling: task up-samples each round's hard pairs to the task mix (known "
                           "after classify; the train stage records it): the counts above take each pair once"
                           + (f", the real count is at most {cfg.curriculum.upsample_limit:g}x"
                              if cfg.curriculum.upsample_limit else ""))
    prices = {key: price(key[1], *tokens.get(key, (0, 0)), options=_model_options(refs.get(key[0])))
              for key in calls}
    return Plan(stages, calls, tokens, prices, assumptions, sizes)


def _per_item(calls: int, n: int) -> int | float:
    """Calls per item: an int when whole (a resumed stage asks that many per item it retries)."""
    if not n:
        return 1
    return calls // n if calls % n == 0 else calls / n


def _model_options(ref: ModelRef | None) -> dict[str, Any]:
    return dict(ref.options) if ref is not None else {}


BATCH_DISCOUNT = 0.5  # OpenAI-style batch endpoints cost half


def render(p: Plan) -> str:
    lines = ["dry run: nothing was written and no model was called.", "", "stages:"]
    for s in p.stages:
        extra = ""
        if s.calls:
            extra += "  calls: " + ", ".join(f"{role} {count:,}" for role, count in s.calls.items())
        if s.examples is not None:
            extra += f"  training examples {s.examples:,}" + (f", ~{s.steps:,} steps" if s.steps else "")
        lines.append(f"  {s.label:<28} {s.action:<22}{extra}")
    lines += ["", "LLM calls, tokens and cost (estimates):"]
    total = 0.0
    priced = True
    for (role, model), count in sorted(p.calls.items()):
        i, o = p.tokens[(role, model)]
        cost = p.prices.get((role, model))
        if cost is None:
            priced = False
            cost_text = "no known price (its backend has none for it)"
        else:
            total += cost
            cost_text = f"${cost:,.2f} (batch API ${cost * BATCH_DISCOUNT:,.2f})"
        lines.append(f"  {role:<10} {model:<32} {count:>9,} calls  {i:>12,} in  {o:>12,} out  {cost_text}")
    lines.append(f"  total: ${total:,.2f} (batch API ${total * BATCH_DISCOUNT:,.2f})"
                 + ("" if priced else " + models without a known price"))
    lines += ["", "sizes: " + ", ".join(f"{k} {v:,}" for k, v in p.sizes.items()), "", "assumptions:"]
    lines += [f"  - {a}" for a in p.assumptions]
    return "\n".join(lines)
