"""YAML config -> validated, typed objects.

Every mistake becomes one :class:`~tapir.errors.ConfigError` naming the file,
the key and what is allowed, raised before anything is written. Validation is
in three layers: YAML syntax, shape and types (pydantic, unknown keys
forbidden), then references (plugin and model names, files) checked against
what is installed.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tapir.errors import ConfigError, TapirError


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Generation(Section):
    max_new_tokens: int = Field(256, ge=1, description="most tokens generated per answer (an answer cut here has "
                                                       "finish reason 'length': see truncation)")
    temperature: float = Field(0.0, ge=0.0, description="sampling temperature; 0: greedy decoding")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="nucleus sampling: keep the smallest token set of this "
                                                          "probability mass; 1: off")


class ModelRef(Section):
    """A model id plus backend options (device, dtype, api_base, concurrency...)."""

    model: str = Field(description="a model id: a named model (`tapir models`), a local folder, BACKEND:NAME, or "
                                   "provider/model for an API model (litellm)")
    options: dict[str, Any] = Field(default_factory=dict, description="the backend's options (`tapir plugins "
                                                                      "BACKEND`): device, dtype, api_base, "
                                                                      "concurrency, ...")
    generation: Generation = Field(default_factory=Generation, description="decoding of this model's answers")


class ServeConfig(Section):
    model: str = Field(description="the backend that answers as the round's checkpoint: 'vllm:{checkpoint}' (in "
                                   "process) or e.g. 'openai/student' with options.api_base for a server")
    options: dict[str, Any] = Field(default_factory=dict, description="that backend's options; {checkpoint} and "
                                                                      "{port} in them are filled in")
    launch: str | None = Field(None, description="a server command tapir starts for the stage and stops after it, "
                                                 "e.g. 'vllm serve {checkpoint} --port {port} --served-model-name "
                                                 "student'; null: a server you run yourself")
    port: int | None = Field(None, ge=1, le=65535, description="the launched server's port (replica i: port + i); "
                                                               "null: a free port")
    ready_timeout_s: float = Field(600.0, gt=0, description="seconds to wait for a launched server to answer "
                                                            "before the stage fails")
    replicas: int = Field(1, ge=1, description="data parallelism: launch this many servers and spread the answers "
                                               "over them (needs launch)")
    gpus_per_replica: int = Field(1, ge=1, description="GPUs each launched replica sees (CUDA_VISIBLE_DEVICES)")

    @model_validator(mode="after")
    def _replicas_need_launch(self):
        if self.replicas > 1 and not self.launch:
            raise ValueError("replicas > 1 needs launch: tapir starts each replica (a server you run yourself "
                             "is given with options.api_bases)")
        return self


class StudentConfig(ModelRef):
    """The student: a local transformers model trained here, answering
    through the local backend unless ``serve`` says otherwise."""

    serve: ServeConfig | None = Field(None, description="answer as each round's checkpoint through another "
                                                        "backend (vLLM, a server); null: the local transformers "
                                                        "backend")


class DataConfig(Section):
    path: str | None = Field(None, description="the instructions: a JSONL / JSON / CSV / parquet file (relative "
                                               "paths from the config's folder)")
    hf_dataset: str | None = Field(None, description="or a Hugging Face dataset: a hub id or a local datasets "
                                                     "folder")
    hf_config: str | None = Field(None, description="the hub dataset's config (subset) name")
    split: str = Field("train", description="the hub dataset's split")
    fields: dict[str, str] = Field(default_factory=dict, description="column names: tapir's field name -> the "
                                                                     "data's column (e.g. {prompt: question})")
    limit: int | None = Field(None, ge=1, description="use the first N usable rows; null: all")
    sample: int | None = Field(None, ge=1, description="use a seeded random subset of N rows (the config's seed), "
                                                       "stratified by task_type; null: all")
    on_bad_row: Literal["skip", "error"] = Field("skip", description="a row without a usable instruction: skip it "
                                                                     "(counted) or stop with an error")
    use_dataset_answers: bool = Field(False, description="train S0 on the data's own answers instead of asking "
                                                         "the teacher for them")


class RoleConfig(Section):
    """A role implementation by plugin name, over an optional model."""

    name: str = Field(description="the component (`tapir plugins` lists them by role)")
    model: ModelRef | None = Field(None, description="the model it calls; null: a component that needs none")
    options: dict[str, Any] = Field(default_factory=dict, description="the component's options (`tapir plugins "
                                                                      "NAME`; checked before anything runs)")


class MFDConfig(Section):
    delta: float | None = Field(2.0, description="the seed cut: an item is hard when its MFD (teacher score - "
                                                 "student score) is above delta; null: use top_fraction or quantile")
    top_fraction: float | None = Field(None, gt=0.0, le=1.0, description="or: the hardest fraction of the items "
                                                                         "by MFD")
    quantile: float | None = Field(None, ge=0.0, lt=1.0, description="or: the items whose MFD is above this "
                                                                     "quantile")
    one_order_failed: Literal["retry", "accept"] = Field(
        "retry", description="a pairwise judgment with one of its two orders failed: retry (the item stays "
                             "unjudged, retried on re-run) or accept (scored from the order that answered)")
    allow_nonpositive: bool = Field(
        False, description="let the seed cut take items with MFD <= 0 (student as good as the teacher or better); "
                           "off: no cut, relative or absolute, calls them hard")


class ResampleConfig(Section):
    weights: Literal["paper", "uniform"] | dict[str, float] = Field(
        "paper", description="task probabilities of the re-sampled seed set and each round's hard pairs: paper "
                             "(Math and Reasoning 1/6 each, Code Generation and Code Debug 1/12 each, the other "
                             "task types share 1/2), uniform, or a mapping task type -> weight")


class CurriculumConfig(Section):
    rounds: int = Field(3, ge=1, description="curriculum rounds after S0 (the paper: 3)")
    alpha: float = Field(0.3, ge=0.0, le=1.0, description="Eq. 4's alpha_1: the weight of hard examples in round 1")
    alpha_step: float = Field(0.2, description="added to alpha each round: alpha_r = alpha + (r - 1) * alpha_step, "
                                               "kept within [0, 1]")
    seed_size: int | None = Field(None, ge=1, description="at most this many seed items (D_S) from the cut; null: "
                                                          "all the cut selects")
    expand_per_round: list[Annotated[int, Field(ge=0)]] = Field(
        default_factory=lambda: [19000, 20000, 20000], min_length=1,
        description="new instructions the teacher writes per round, one entry per round (the paper: 19K, 20K, 20K)")
    recompute_mfd: bool = Field(False, description="judge again with each round's student S_r (the MFD of S_r)")
    reselect_seed: bool = Field(False, description="extension (not in the paper): with recompute_mfd, round r+1 "
                                                   "re-selects D_S from the MFD of S_r instead of keeping S0's cut")
    weighting: Literal["eq4", "share"] = Field(
        "eq4", description="Eq. 4 as written (eq4: each hard example weighs alpha_r, each easy one 1 - alpha_r) or "
                           "share (hard examples share alpha_r of the total weight)")
    sampling: Literal["task", "task-draw", "natural"] = Field(
        "task", description="Eq. 3 in each round's training set: task (every pair at least once, up-sampled to "
                            "the task mix), task-draw (one draw with replacement, drops pairs), natural (each "
                            "pair once)")
    upsample_limit: float | None = Field(
        None, ge=1.0, description="with sampling: task, a round's hard examples are at most this many times the "
                                  "pairs of D_P (the mix then gets as close to Eq. 3 as that allows); null: no limit")
    max_steps: int | None = Field(
        None, ge=1, description="optimizer steps of each curriculum round (rounds >= 1), passed to the trainer as "
                                "max_steps; null: the trainer's options decide (`tapir ablate --match-steps` sets it)")
    start_from: Literal["s0", "base"] = Field(
        "s0", description="round 1 trains from S0 (the paper) or from the base model (the Seed Alpaca ablations)")

    @model_validator(mode="after")
    def _reselect(self):
        if self.reselect_seed and not self.recompute_mfd:
            raise ValueError("reselect_seed needs recompute_mfd: true (D_S is re-selected from each round's MFD)")
        return self

    @model_validator(mode="after")
    def _rounds(self):
        if len(self.expand_per_round) != self.rounds:
            raise ValueError(f"expand_per_round has {len(self.expand_per_round)} entries for {self.rounds} "
                             f"round(s); give one per round")
        for r in range(1, self.rounds + 1):
            a = self.alpha + (r - 1) * self.alpha_step
            if not 0.0 <= a <= 1.0:
                raise ValueError(f"alpha + (r - 1) * alpha_step = {a:.2f} in round {r}, outside [0, 1]; "
                                 f"lower alpha_step or rounds")
        return self


class ExpansionConfig(Section):
    examples_in_prompt: int = Field(3, ge=1, description="instructions of one task type shown in each expansion "
                                                             "prompt (the drawn seed and examples_in_prompt - 1 "
                                                             "others)")
    dedup: Literal["minhash", "rouge", "embedding", "none"] = Field(
        "minhash", description="how near-duplicate new instructions are found (and asked again): minhash (MinHash "
                               "LSH candidates, checked with exact ROUGE-L), rouge (exact ROUGE-L F1), embedding "
                               "(cosine of the encoder's vectors), none")
    dedup_threshold: float = Field(0.7, gt=0.0, le=1.0, description="similarity at or above which a new "
                                                                    "instruction is a duplicate")
    encoder: str = Field("minilm", description="the encoder component for dedup: embedding")
    max_attempts_factor: float = Field(3.0, ge=1.0, description="tries per new instruction (a malformed or "
                                                                "near-duplicate reply is asked again), at most "
                                                                "this many (whole part)")
    generation: Generation = Field(default_factory=lambda: Generation(max_new_tokens=256, temperature=0.7,
                                                                      top_p=0.95),
                                   description="the teacher's sampling of new instructions (a retry asks again "
                                               "with a new sample index)")


class FailuresConfig(Section):
    max_failure_rate: dict[str, Annotated[float, Field(ge=0.0, le=1.0)]] = Field(
        default_factory=dict, description="largest failed share per stage before the run stops (exit 1), e.g. "
                                          "{teacher_answers: 0.05}; stages not named keep their defaults "
                                          "(docs/pipeline.md)")
    retry: bool = Field(True, description="re-runs retry failed items (the CLI's --no-retry turns it off)")
    circuit_breaker: int = Field(5, ge=0, description="a stage stops after this many LLM calls in a row failed the "
                                                      "same way (kind, cause, status); 0: off")
    max_draws: int = Field(3, ge=1, description="an item whose reply failed on its content (malformed, too long, "
                                                "rejected by a check, a judge reply without a score) is asked again "
                                                "on re-run with a fresh draw, up to this many draws in all")

    @field_validator("max_failure_rate")
    @classmethod
    def _known_stages(cls, value: dict[str, float]) -> dict[str, float]:
        """Keys are stage names (built-in or a plugin's): a typo would be a threshold nobody reads."""
        from tapir.pipeline.recipe import stage_table

        known = sorted(stage_table())
        for key in value:
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f" Did you mean '{close[0]}'?" if close else ""
                raise ValueError(f"unknown stage '{key}'.{hint} Stages: {', '.join(known)}")
        return value


class BudgetConfig(Section):
    max_cost_usd: float | None = Field(
        None, ge=0, description="most USD the run's API calls may cost (litellm's prices, or the backend's "
                                "input_usd_per_million / output_usd_per_million); the run stops before the call "
                                "that would pass it (exit 1); not part of the run id: raise it and re-run to resume")
    per_role: dict[Literal["teacher", "judge", "rewriter", "classifier"], Annotated[float, Field(ge=0)]] = Field(
        default_factory=dict, description="the same per role in USD, e.g. {teacher: 20, judge: 5}")


class AddStage(Section):
    stage: str = Field(description="a stage a plugin registered (register_stages)")
    after: str = Field(description="the stage it follows (its upstream node), e.g. train")
    round: int = Field(0, ge=0, description="the round of the node it follows")
    options: dict[str, Any] = Field(default_factory=dict, description="the stage's options (part of its key)")


class RecipeConfig(Section):
    add: list[AddStage] = Field(default_factory=list, description="plugin stages added to the recipe")
    skip: list[Literal["rewrite", "resample", "seed_cut", "expand"]] = Field(
        default_factory=list, description="stages left out (Table 5's ablations): rewrite (train on the teacher's "
                                          "answers), resample (expansion seeds keep the natural task mix), seed_cut "
                                          "(every judged item is hard), expand (no new instructions)")


class TrainerConfig(Section):
    name: str = Field("hf", description="the trainer component (`tapir plugins` lists trainers)")
    options: dict[str, Any] = Field(default_factory=dict, description="the trainer's options (`tapir plugins "
                                                                      "NAME`): learning rate, epochs, LoRA, ...")


class PushToHub(Section):
    """Upload each round's checkpoint folder to the Hugging Face Hub (export stage)."""

    repo_id: str = Field(description="'user/name'; '{round}' in it gives one repo per round")
    private: bool = Field(True, description="create the repos private")
    path_in_repo: str | None = Field(None, description="folder in the repo for round r; null: 'round-{round}' in "
                                                       "one repo, the repo's root when repo_id has '{round}'")
    dataset: bool = Field(True, description="also upload every round's training set (chat messages, one split a "
                                            "round) with a dataset card, as a dataset repo")
    dataset_repo_id: str | None = Field(None, description="the dataset repo; null: repo_id without '{round}'")


class ExportConfig(Section):
    push_to_hub: PushToHub | None = Field(None, description="upload checkpoints (and training sets) to the Hugging "
                                                            "Face Hub; null: write them locally only")


class TruncationConfig(Section):
    """What to do with answers cut at max_new_tokens (finish reason "length")."""

    teacher: Literal["flag", "drop", "keep"] = Field(
        "flag", description="a teacher answer cut at max_new_tokens: flag (keep it, warn with the count), drop (the "
                            "item fails as 'truncated', counted against failures.max_failure_rate) or keep (silently)")


class HeldoutConfig(Section):
    path: str = Field(description="JSONL / JSON / CSV / parquet of instructions no round trains on")
    skip: int = Field(0, ge=0, description="rows to skip first (e.g. the rows data.limit takes)")
    limit: int = Field(32, ge=1, description="held-out instructions scored")


class BenchmarkRef(Section):
    name: str = Field(description="an evaluator (`tapir bench list`): mtbench, alpacaeval, lmeval, ...")
    options: dict[str, Any] = Field(default_factory=dict, description="its options (`tapir plugins NAME`)")
    max_failure_rate: float = Field(0.0, ge=0.0, le=1.0, description="largest failed share of its items, as "
                                                                     "`tapir bench run --max-failure-rate`")
    rounds: Literal["all", "last"] = Field(
        "all", description="all: the base model and every S_r (the paper's Fig. 3); last: the base model and the "
                           "final S_r")


class EvaluationConfig(Section):
    heldout: HeldoutConfig | None = Field(
        None, description="held-out loss: the teacher answers these instructions once; the base model and every "
                          "S_r are scored by their per-token NLL of those answers; null: none")
    benchmarks: list[BenchmarkRef] = Field(
        default_factory=list, description="benchmarks run on the base model and the checkpoints, as `tapir bench "
                                          "run` does (`tapir compare` and `tapir report` show them)")


class StudyTag(Section):
    """Which study a run belongs to (``tapir study``; docs/study.md): its
    name, the student backbone and the Table 5 setting of this run."""

    name: str = Field(description="the study's name: tapir study-report NAME; runs are grouped by it")
    student: str | None = Field(None, description="this run's student backbone (model id); set by tapir study")
    setting: str | None = Field(None, description="this run's Table 5 setting (full, full-alpaca, seed-alpaca, "
                                                  "...); set by tapir study")


class PipelineConfig(Section):
    name: str = Field(description="the run's name (`tapir runs`, `tapir report NAME`)")
    study: StudyTag | None = Field(
        None, description="the study this config is (`tapir study`): a name, or {name, student, setting}, which "
                          "tapir study writes into each of its runs' configs; null: none")
    db: str | None = Field(None, description="the SQLite database; null: --db, TAPIR_DB or ./tapir.db")
    output_dir: str = Field("tapir-out", description="where checkpoints, exported data and plots are written")
    seed: int = Field(0, description="seed of tapir's draws (data.sample, re-sampling, expansion) and of "
                                       "sampled requests")
    data: DataConfig = Field(description="the instructions to distil from")
    teacher: RoleConfig = Field(description="the teacher: answers, writes new instructions, answers refined ones")
    student: StudentConfig | None = Field(None, description="the student trained here (give this or students)")
    students: list[StudentConfig] = Field(
        default_factory=list, description="several backbones: one run per student, one after another; stages that "
                                          "do not read the student are computed once")
    judge: RoleConfig = Field(description="the judge of the MFD (teacher vs student answers); its decoding is "
                                          "options.params (`tapir plugins NAME`), not model.generation")
    classifier: RoleConfig = Field(description="the task-type classifier of the instructions; its decoding is "
                                               "options.params (`tapir plugins NAME`), not model.generation")
    rewriter: RoleConfig | None = Field(None, description="the instruction rewriter (Appendix C); null: train on "
                                                          "the teacher's answers as they are")
    trainer: TrainerConfig = Field(default_factory=TrainerConfig, description="how each round's student is trained")
    mfd: MFDConfig = Field(default_factory=MFDConfig, description="the seed cut on the MFD")
    resample: ResampleConfig = Field(default_factory=ResampleConfig, description="task-aware re-sampling (Eq. 3)")
    curriculum: CurriculumConfig = Field(default_factory=CurriculumConfig, description="the rounds, Eq. 4's weights")
    expansion: ExpansionConfig = Field(default_factory=ExpansionConfig, description="new instructions per round")
    failures: FailuresConfig = Field(default_factory=FailuresConfig, description="when failed items stop a stage")
    budget: BudgetConfig = Field(default_factory=BudgetConfig, description="the most the run's API calls may cost")
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig,
                                         description="held-out loss and benchmarks of every round")
    recipe: RecipeConfig = Field(default_factory=RecipeConfig, description="stages added or left out")
    export: ExportConfig = Field(default_factory=ExportConfig, description="where checkpoints and data go at the end")
    truncation: TruncationConfig = Field(default_factory=TruncationConfig,
                                         description="what to do with answers cut at max_new_tokens")

    @field_validator("study", mode="before")
    @classmethod
    def _study_name(cls, v: Any) -> Any:
        return {"name": v} if isinstance(v, str) else v

    @field_validator("students", mode="before")
    @classmethod
    def _student_ids(cls, v: Any) -> Any:
        # ``students: [hf:a, hf:b]``: a bare model id is {model: id}
        return [{"model": s} if isinstance(s, str) else s for s in v] if isinstance(v, list) else v

    @model_validator(mode="after")
    def _one_student(self):
        if (self.student is None) == (not self.students):
            raise ValueError("give either 'student' (one model) or 'students' (a list of models), not both or none")
        return self

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be empty")
        return v


# --- error formatting -------------------------------------------------------


def _loc(loc: tuple) -> str:
    parts = []
    for p in loc:
        if isinstance(p, int):
            parts.append(f"[{p}]")
        else:
            parts.append(("." if parts else "") + str(p))
    return "".join(parts)


def _model_at(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The pydantic model class that owns the key at ``loc`` (for 'allowed' lists)."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int) or not (isinstance(current, type) and issubclass(current, BaseModel)):
            continue
        field = current.model_fields.get(part)
        if field is None:
            return None
        annotation = field.annotation
        candidates = [annotation, *getattr(annotation, "__args__", ())]
        current = next(
            (c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)),
            None,
        )
        if current is None:
            return None
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _is_tag(part: Any) -> bool:
    """A union-branch tag in an error location ('literal[...]', 'dict[str,float]',
    'function-after[...]'), not a key the user wrote."""
    return isinstance(part, str) and (part.startswith("function-") or "[" in part)


def _merge_union_branches(errors: list[dict]) -> list[dict]:
    """Pydantic reports one error per branch of a union, each under a tag.
    Keep the branches that got past the union's own level (the input had
    their shape, so their errors are the real ones); when none did, merge the
    branches into one error at the union's key: "should be A, or B"."""
    out: list[dict] = []
    groups: dict[tuple, list[tuple[int, dict]]] = {}
    for err in errors:
        loc = tuple(err["loc"])
        tag_at = next((i for i, p in enumerate(loc) if _is_tag(p)), None)
        if tag_at is None:
            out.append(err)
            continue
        union_loc = loc[:tag_at]
        if union_loc not in groups:
            groups[union_loc] = []
            out.append({"_union": union_loc})
        groups[union_loc].append((tag_at, err))
    merged: list[dict] = []
    for err in out:
        if "_union" not in err:
            merged.append(err)
            continue
        union_loc = err["_union"]
        branches = groups[union_loc]
        deeper = [e for tag_at, e in branches if len(e["loc"]) > tag_at + 1]
        if deeper:
            merged.extend({**e, "loc": tuple(p for p in e["loc"] if not _is_tag(p))} for e in deeper)
            continue
        msgs = list(dict.fromkeys(e["msg"] for _, e in branches))
        msg = msgs[0] + "".join(", or " + m.removeprefix("Input should be ") for m in msgs[1:])
        merged.append({**branches[0][1], "loc": union_loc, "msg": msg})
    return merged


def format_validation_error(exc: ValidationError, model: type[BaseModel], source: str) -> str:
    lines = []
    seen = set()
    for err in _merge_union_branches(exc.errors()):
        loc = tuple(p for p in err["loc"] if not _is_tag(p))
        # Unions report one error per branch; keep the first per location.
        key = _loc(loc)
        if key in seen:
            continue
        seen.add(key)
        if err["type"] == "extra_forbidden":
            owner = _model_at(model, loc)
            allowed = sorted(owner.model_fields) if owner else []
            close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            lines.append(f"{source}: unknown key '{key}'.{hint} Allowed here: {', '.join(allowed)}")
        elif err["type"] == "missing":
            lines.append(f"{source}: missing required key '{key}'")
        else:
            got = err.get("input")
            got_text = f" (got {got!r:.60})" if got is not None and not isinstance(got, dict) else ""
            lines.append(f"{source}: '{key}': {err['msg']}{got_text}")
    return "\n".join(lines)


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping
    anywhere in the document (plain YAML keeps the last one silently: a
    second ``curriculum:`` would replace the first section). Keys brought in
    by a merge (``<<: *anchor``) may be overridden."""

    def get_single_data(self):
        node = self.get_single_node()
        if node is None:
            return None
        duplicates = _duplicate_keys(node)
        if duplicates:
            raise _DuplicateKeys(duplicates)
        return self.construct_document(node)


class _DuplicateKeys(Exception):
    def __init__(self, found: list[tuple[str, int, int]]):
        self.found = found  # (dotted key, first line, repeated line), 1-based


def _duplicate_keys(node, path: tuple[str, ...] = (),
                    visited: set[int] | None = None) -> list[tuple[str, int, int]]:
    visited = set() if visited is None else visited
    if id(node) in visited:  # an alias: already checked where its anchor is
        return []
    visited.add(id(node))
    found: list[tuple[str, int, int]] = []
    if isinstance(node, yaml.MappingNode):
        seen: dict[tuple[str, str], int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                continue
            key = (key_node.tag, key_node.value)
            line = key_node.start_mark.line + 1
            if key in seen:
                found.append((".".join([*path, key_node.value]), seen[key], line))
            else:
                seen[key] = line
            found += _duplicate_keys(value_node, (*path, key_node.value), visited)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            found += _duplicate_keys(item, (*path[:-1], f"{path[-1]}[{i}]") if path else (f"[{i}]",), visited)
    return found


def read_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}. Pass the path of a YAML file (see configs/ for examples).")
    try:
        text = p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}). "
                          f"Save the config as UTF-8") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except _DuplicateKeys as dup:
        found = sorted(dup.found, key=lambda d: d[2])
        raise ConfigError("\n".join(
            f"{p} line {again}: duplicate key '{key}' (first given at line {first}); YAML would keep only "
            f"the last one, silently. Merge the two into one" for key, first, again in found
        )) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{p}{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the top level must be a mapping of keys (name:, data:, teacher:, ...)")
    return data


def parse(data: dict[str, Any], model: type[BaseModel] = PipelineConfig, source: str = "config"):
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, model, source)) from None


def config_base(source: str | Path | dict) -> Path:
    """The folder relative paths in a config are read from: the YAML file's
    folder, or the working directory for a config given as a dict."""
    return Path.cwd() if isinstance(source, dict) else Path(source).resolve().parent


def _set_parts(item: str) -> tuple[list[str], Any]:
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set {item}: give KEY=VALUE, e.g. --set mfd.delta=1.5 or "
                          f"--set curriculum.expand_per_round.0=5")
    parts = key.split(".")
    if any(not p for p in parts):
        raise ConfigError(f"--set {item}: '{key}' has an empty part; write dotted keys such as trainer.options.lr")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {item}: the value is not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if isinstance(value, str) and _FLOAT.fullmatch(raw.strip()):
        value = float(value)  # PyYAML reads 1e-4 (no dot) as a string
    return parts, value


_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _check_key(parts: list[str], item: str) -> None:
    """Every part of a dotted key names a field of the config (up to a
    free-form mapping such as ``trainer.options``)."""
    current: Any = PipelineConfig
    in_list = False  # current is the item model of a list field: the next part is an index
    for i, part in enumerate(parts):
        if in_list and part.lstrip("-").isdigit():
            in_list = False
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return  # a dict of options, a list of scalars, or a scalar: checked on validation
        if part not in current.model_fields:
            allowed = sorted(current.model_fields)
            close = difflib.get_close_matches(part, allowed, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"--set {item}: unknown key '{'.'.join(parts[: i + 1])}'.{hint} "
                              f"Allowed here: {', '.join(allowed)}")
        annotation = current.model_fields[part].annotation
        candidates = [annotation, *getattr(annotation, "__args__", ())]
        current = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        in_list = getattr(annotation, "__origin__", None) is list


def _one_student_kind(data: dict[str, Any], parts: list[str], value: Any) -> None:
    """``--set students=[...]`` on a config with ``student:`` (or ``--set
    student=...`` on one with ``students:``) replaces the other key: a config
    has one or the other. A bare model id in the new ``students`` list takes
    the replaced ``student`` entry's options and generation settings."""
    import copy

    if parts == ["students"] and value:
        template = data.pop("student", None)
        if isinstance(template, dict) and isinstance(value, list):
            value[:] = [{**copy.deepcopy(template), "model": v} if isinstance(v, str) else v for v in value]
    elif parts == ["student"] and value:
        data.pop("students", None)


def apply_overrides(data: dict[str, Any], sets: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """A copy of config ``data`` with each ``KEY=VALUE`` of ``sets`` applied:
    dotted keys (``trainer.options.lr=1e-4``), list indices
    (``curriculum.expand_per_round.0=5``; the index one past the end
    appends), YAML-parsed values (``3``, ``null``, ``[1, 2]``, ``{a: 1}``).
    Mappings on the way are created when missing. A key the config does not
    have is a :class:`ConfigError` naming it; values are validated with the
    rest of the config."""
    import copy

    out = copy.deepcopy(data)
    for item in sets or ():
        parts, value = _set_parts(item)
        _check_key(parts, item)
        _one_student_kind(out, parts, value)
        node: Any = out
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            where = ".".join(parts[:i]) or "the config"
            if isinstance(node, list):
                if not part.lstrip("-").isdigit():
                    raise ConfigError(f"--set {item}: '{where}' is a list; index it with a number, got '{part}'")
                index = int(part)
                if not -len(node) <= index <= len(node):
                    raise ConfigError(f"--set {item}: index {index} is outside '{where}' "
                                      f"({len(node)} entries; {len(node)} appends)")
                if index == len(node):
                    node.append({} if not last else None)
                if last:
                    node[index] = value
                else:
                    if node[index] is None:
                        node[index] = {}
                    node = node[index]
            elif isinstance(node, dict):
                if last:
                    node[part] = value
                else:
                    if node.get(part) is None:
                        node[part] = {}
                    node = node[part]
            else:
                raise ConfigError(f"--set {item}: '{where}' is {type(node).__name__} {node!r:.40}, "
                                  f"not a mapping or a list")
    return out


def load_config(path: str | Path | dict[str, Any], check_references: bool = True,
                overrides: list[str] | tuple[str, ...] | None = None) -> PipelineConfig:
    """The validated config of a YAML file (or of a dict: relative paths are
    then read from the working directory), with ``--set`` ``overrides``
    applied before validation."""
    if isinstance(path, dict):
        data, source = dict(path), "config"
    else:
        data, source = read_yaml(path), str(path)
    if overrides:
        data = apply_overrides(data, list(overrides))
        source += " (with --set " + " ".join(overrides) + ")"
    config = parse(data, PipelineConfig, source)
    if check_references:
        problems = check_pipeline_references(config, config_base(path), source)
        if problems:
            raise ConfigError("\n".join(problems))
    return config


def resolve_path(value: str, base: Path) -> Path:
    p = Path(value).expanduser()
    if p.is_absolute() or p.exists():
        return p
    return base / p


def check_pipeline_references(config: PipelineConfig, base: Path, source: str) -> list[str]:
    """Plugin names, model ids and files named by the config must exist."""
    from tapir import models
    from tapir.plugins import registry

    reg = registry()
    problems: list[str] = []

    def check_component(role: str, key: str, name: str):
        table = reg.by_role[role]
        if name not in table:
            allowed = ", ".join(sorted(table)) or "none installed"
            problems.append(f"{source}: '{key}': unknown {role[:-1]} '{name}'. Available: {allowed}")
        elif not table[name].available:
            problems.append(f"{source}: '{key}': {role[:-1]} '{name}' is unavailable: {table[name].reason}")

    def check_model(key: str, ref: ModelRef | None):
        if ref is None:
            return
        try:
            spec = models.resolve(ref.model, ref.options)
        except TapirError as exc:
            problems.append(f"{source}: '{key}.model': {exc}")
            return
        check_component("backends", f"{key}.model", spec.backend)

    data = config.data
    if not data.path and not data.hf_dataset:
        problems.append(f"{source}: 'data': give 'path' (a JSONL/JSON/CSV/parquet file) or 'hf_dataset'")
    if data.path and not resolve_path(data.path, base).exists():
        problems.append(f"{source}: 'data.path': file not found: {data.path} (relative paths are read from {base})")
    check_component("teachers", "teacher.name", config.teacher.name)
    check_model("teacher", config.teacher.model)
    check_model("student", config.student)
    check_component("judges", "judge.name", config.judge.name)
    check_model("judge", config.judge.model)
    check_component("classifiers", "classifier.name", config.classifier.name)
    check_model("classifier", config.classifier.model)
    if config.rewriter is not None:
        check_component("rewriters", "rewriter.name", config.rewriter.name)
        check_model("rewriter", config.rewriter.model)
    check_component("trainers", "trainer.name", config.trainer.name)
    if isinstance(config.resample.weights, dict):
        from tapir.tasks import TASK_TYPES

        for label in config.resample.weights:
            if label not in TASK_TYPES:
                problems.append(
                    f"{source}: 'resample.weights.{label}': unknown task type. Allowed: {', '.join(TASK_TYPES)}"
                )
    return problems
