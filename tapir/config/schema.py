"""The config's shape: one pydantic model per section, unknown keys
forbidden, each key with its description (``tapir config --doc``).

Reading the YAML and applying ``--set`` is :mod:`tapir.config.loading`;
errors and references checked against what is installed are
:mod:`tapir.config.validation`.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_serializer, model_validator


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


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
                                                                     "data's column (e.g. {instruction: question})")
    limit: int | None = Field(None, ge=1, description="use the first N usable rows; null: all")
    sample: int | None = Field(None, ge=1, description="use a seeded random subset of N rows (the config's seed), "
                                                       "stratified by task_type; null: all")
    on_bad_row: Literal["skip", "error"] = Field("skip", description="a row without a usable instruction: skip it "
                                                                     "(counted) or stop with an error")
    use_dataset_answers: bool = Field(False, description="train S0 on the data's own answers instead of asking "
                                                         "the teacher for them")

    @field_validator("fields")
    @classmethod
    def _known_fields(cls, v: dict[str, str]) -> dict[str, str]:
        # The keys are tapir's names (the values are the data's columns): a key tapir does not read
        # would leave its column unmapped, silently.
        import difflib

        from tapir.pipeline.data import DEFAULT_FIELDS

        for key in v:
            if key not in DEFAULT_FIELDS:
                close = difflib.get_close_matches(key, list(DEFAULT_FIELDS), n=1)
                hint = f" Did you mean '{close[0]}'?" if close else ""
                raise ValueError(f"unknown field '{key}' (the keys are tapir's field names, the values your "
                                 f"columns, e.g. {{instruction: question}}).{hint} Fields: "
                                 f"{', '.join(DEFAULT_FIELDS)}")
        return v

    @model_validator(mode="after")
    def _one_source(self):
        if self.path and self.hf_dataset:
            raise ValueError(f"give 'path' or 'hf_dataset', not both (path: {self.path}, hf_dataset: "
                             f"{self.hf_dataset}): only path would be read. Remove one")
        return self


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

    @model_validator(mode="after")
    def _one_cut(self):
        # The cut reads top_fraction, else quantile, else delta: a second one given would be ignored.
        # delta counts only when written (its default 2.0 gives way to top_fraction or quantile).
        given = [f"{k}: {getattr(self, k)}" for k in ("delta", "top_fraction", "quantile")
                 if getattr(self, k) is not None and (k != "delta" or "delta" in self.model_fields_set)]
        if len(given) > 1:
            used = "top_fraction" if self.top_fraction is not None else "quantile"
            names = [g.split(":")[0] for g in given]
            raise ValueError(f"give one seed cut, not {' and '.join(given)}: only {used} would be used. Keep one "
                             f"and set the other(s) to null (e.g. --set mfd.{names[0]}=null to use "
                             f"{names[-1]})")
        return self


class ResampleConfig(Section):
    weights: Literal["paper", "uniform"] | dict[str, float] = Field(
        "paper", description="task probabilities of the re-sampled seed set and each round's hard pairs: paper "
                             "(Math and Reasoning 1/6 each, Code Generation and Code Debug 1/12 each, the other "
                             "task types share 1/2), uniform, or a mapping task type -> weight")

    @field_validator("weights")
    @classmethod
    def _weights(cls, v: Any) -> Any:
        # Eq. 3 divides by their sum: a negative weight or none above 0 failed the resample stage,
        # after the teacher, S0 and the judge were paid for.
        if isinstance(v, dict):
            negative = [f"{k}: {w:g}" for k, w in v.items() if w < 0]
            if negative:
                raise ValueError(f"weights must be 0 or more, got {', '.join(negative)}")
            if not any(w > 0 for w in v.values()):
                raise ValueError("give at least one task type a weight above 0 (the weights are divided by "
                                 "their sum)")
        return v


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


_HUB_NAME = re.compile(r"[A-Za-z0-9_](?:[\w.-]*[A-Za-z0-9_])?")


class PushToHub(Section):
    """Upload each round's checkpoint folder to the Hugging Face Hub (export stage)."""

    repo_id: str = Field(description="'user/name'; '{round}' in it gives one repo per round")
    private: bool = Field(True, description="create the repos private")
    path_in_repo: str | None = Field(None, description="folder in the repo for round r; null: 'round-{round}' in "
                                                       "one repo, the repo's root when repo_id has '{round}'")
    dataset: bool = Field(True, description="also upload every round's training set (chat messages, one split a "
                                            "round) with a dataset card, as a dataset repo")
    dataset_repo_id: str | None = Field(None, description="the dataset repo; null: repo_id without '{round}'")

    @field_validator("repo_id", "dataset_repo_id")
    @classmethod
    def _hub_repo_id(cls, v: str | None) -> str | None:
        # Uploads run last, after every paid call: a repo id the hub refuses is found here.
        if v is None:
            return v
        try:
            name = v.format(round=1)
        except (KeyError, IndexError, ValueError):
            raise ValueError("only '{round}' may appear in braces, e.g. me/student-r{round}") from None
        parts = name.split("/")
        if len(parts) > 2 or not all(_HUB_NAME.fullmatch(p) and ".." not in p and "--" not in p and len(p) <= 96
                                     for p in parts):
            raise ValueError("not a Hugging Face repo id: write 'user/name' (letters, digits, '-', '_' and '.'; "
                             "not starting or ending with '-' or '.')")
        return v


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
    max_new_tokens: int | None = Field(
        None, ge=1, description="longest teacher answer to a held-out instruction; null: the teacher's "
                                "generation.max_new_tokens (a shorter answer is a cheaper, still per-token, loss)")

    @model_serializer(mode="wrap")
    def _unset_length_left_out(self, handler):
        # Unset, the key is left out, so the stage keys of runs made before it existed stay the same.
        data = handler(self)
        if self.max_new_tokens is None:
            data.pop("max_new_tokens", None)
        return data


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

    @field_validator("name", "output_dir")
    @classmethod
    def _name(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be empty")
        return v
