"""What every pipeline stage shares: the config, the store, the run, the
output folder, and the role components built from the config (once, on
first use), plus the scoped reads and writes stages make.

A running stage gets its own context (:meth:`Context.for_stage`) whose
config is the stage's :class:`~tapir.pipeline.reads.ConfigView`: using a
role (``ctx.teacher``, ``ctx.judge(...)``, ``ctx.trainer``,
``ctx.student_base()``) reads that role's config through it, every time,
even when the role was built by an earlier stage.

Rows are written under a *scope*: the key of the stage that wrote them
(see :mod:`tapir.pipeline.engine`). Reads name the scope they read, so a
stage never sees another key's rows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from tapir.config.schema import ModelRef, PipelineConfig
from tapir.errors import TapirError
from tapir.plugins import registry
from tapir.roles import Completion, GenerationParams, Item
from tapir.runs import Run
from tapir.store import classifications as store_classifications
from tapir.store import items as store_items
from tapir.store import responses as store_responses
from tapir.store import scores as store_scores
from tapir.store.db import Store, dumps

from tapir.pipeline.reads import SPEED_OPTIONS  # noqa: F401  (where it used to live)


def params_of(ref: ModelRef | None) -> GenerationParams:
    """The generation parameters a role's model config asks for."""
    if ref is None:
        return GenerationParams()
    g = ref.generation
    return GenerationParams(max_new_tokens=g.max_new_tokens, temperature=g.temperature, top_p=g.top_p)


@dataclass
class Context:
    config: PipelineConfig
    store: Store
    run: Run
    base_dir: Path  # where relative paths in the config are read from
    out_dir: Path
    _backends: dict[str, Any] = field(default_factory=dict)
    _tags: dict[str, Any] = field(default_factory=dict)
    loaded: Any = None  # the data's LoadReport, read before anything was written
    _roles: dict[str, Any] = field(default_factory=dict)  # built once, shared by every stage's context
    # A stage's context keeps the items it read, by scope, for the stage run (None: not a stage's context).
    _item_reads: dict[str, list[Item]] | None = None
    store_item_reads: int = 0  # scopes read from the store by this context (not from _item_reads)

    def for_stage(self, config) -> "Context":
        """This context as a stage sees it: ``config`` (the stage's view)
        instead of the whole config; backends, roles and tags are shared;
        the items it reads are its own (read once per scope, see :meth:`items`)."""
        return replace(self, config=config, _item_reads={}, store_item_reads=0)

    def _cached_role(self, role: str, build: Callable[[], Any]) -> Any:
        if role not in self._roles:
            self._roles[role] = build()
        return self._roles[role]

    def drop_role(self, role: str) -> None:
        """Forget the built ``role`` (e.g. ``"classifier"``), so that what it
        holds (an encoder model) is freed; it is built again if read again."""
        self._roles.pop(role, None)

    # --- models and roles ------------------------------------------------

    def backend(self, role: str, model_id: str, options: dict[str, Any] | None = None):
        """A cached backend for ``model_id`` in ``role`` (loaded once per run;
        its calls are tagged with the role and the stage being run)."""
        from tapir.models import load_cached

        key = dumps([role, model_id, options or {}])
        if key not in self._backends:
            backend = load_cached(model_id, self.store, self.run.id, dict(options or {}))
            backend.tags = {**self._tags, "role": role}
            self._backends[key] = backend
        return self._backends[key]

    def close_backends(self) -> None:
        """Free what every model loaded in this run holds (GPU memory, engines);
        each loads again when next used. Called before training and at the end."""
        for backend in self._backends.values():
            backend.close()

    @property
    def call_tags(self) -> dict[str, Any]:
        """The tags (stage key, round) the current stage's calls carry."""
        return dict(self._tags)

    def tag_calls(self, **tags: Any) -> None:
        """Tag every backend's next calls (stage key, round)."""
        self._tags.update(tags)
        for backend in self._backends.values():
            backend.tags.update(tags)

    def _role(self, role: str, name: str, ref: ModelRef | None, options: dict[str, Any]):
        component = registry().get(role, name)
        backend = self.backend(role[:-1], ref.model, ref.options) if ref is not None else None
        return component.create(backend, options=options, where=f"{role[:-1]}.options")

    # Each role reads its config section first (through a stage's view, a
    # declared read), then builds the role once.

    @property
    def teacher(self):
        cfg = self.config.teacher
        return self._cached_role("teacher", lambda: self._role("teachers", cfg.name, cfg.model, cfg.options))

    @property
    def rewriter(self):
        cfg = self.config.rewriter
        if cfg is None:
            return None
        return self._cached_role("rewriter", lambda: self._role("rewriters", cfg.name, cfg.model, cfg.options))

    @property
    def classifier(self):
        cfg = self.config.classifier
        return self._cached_role("classifier", lambda: self._classifier(cfg))

    def _classifier(self, cfg):
        from tapir.options import input_files, output_folders

        options = dict(cfg.options)
        model = registry().get("classifiers", cfg.name).options_model()
        for key in input_files(model) + output_folders(model):
            if options.get(key):
                options[key] = str(self.path(options[key]))
        folders = output_folders(model)
        for key in folders:
            # What the classifier trains lives with the run's outputs unless the config says where.
            options.setdefault(key, str(self.out_dir / "classifier" / (key if len(folders) > 1 else "")))
        return self._role("classifiers", cfg.name, cfg.model, options)

    def judge_needs_student(self) -> bool:
        return self._judge_flag("needs_student")

    def judge_reads_student_answer(self) -> bool:
        """False for judges (student-loss) that score the teacher's answer
        under the student: then the student need not answer at all."""
        return self._judge_flag("reads_student_answer")

    def _judge_flag(self, name: str) -> bool:
        """A flag every judge declares (tapir.roles.Judge), as the registry
        recorded it when the plugin registered the judge."""
        component = registry().get("judges", self.config.judge.name)
        component.load()  # an unavailable or broken judge says so here
        if name not in component.flags:
            raise TapirError(f"judge '{component.name}' ({component.plugin}) does not declare '{name}' "
                             f"(see tapir.roles.Judge); update the plugin")
        return component.flags[name]

    def judge(self, student_path: str | None = None):
        """The MFD judge; judges that need the student score with it."""
        cfg = self.config.judge
        component = registry().get("judges", cfg.name)
        if self.judge_needs_student():
            if student_path is None:
                raise TapirError(f"judge '{cfg.name}' needs the student model")
            backend = self.backend("judge", f"hf:{student_path}", self.config.student.options)
        else:
            backend = self.backend("judge", cfg.model.model, cfg.model.options) if cfg.model is not None else None
        return component.create(backend, options=cfg.options, where="judge.options")

    @property
    def trainer(self):
        cfg = self.config.trainer
        return self._cached_role("trainer", lambda: registry().get("trainers", cfg.name).create(
            options=cfg.options, where="trainer.options"))

    def encoder(self, name: str):
        return registry().get("encoders", name).create(options={}, where="expansion.encoder")

    def student_base(self) -> str:
        """The folder or hub id the trainer loads for the student's S0."""
        from tapir.models import backend_flag, resolve
        from tapir.plugins import get_plugin_manager

        # The backend and name do not depend on the options: S0's base reads student.model only.
        spec = resolve(self.config.student.model)
        if not backend_flag(spec.backend, "trainable"):
            raise TapirError(
                f"student.model '{self.config.student.model}' resolves to backend '{spec.backend}'; "
                "the student must be a local transformers model (a folder, hub id, or hf:NAME)"
            )
        answer = get_plugin_manager().hook.resolve_trainable(backend=spec.backend, model_name=spec.name)
        return answer or spec.name

    def path(self, value: str) -> Path:
        from tapir.config.paths import resolve_path

        return resolve_path(value, self.base_dir)

    # --- scoped rows -----------------------------------------------------------

    def add_items(self, scope: str, items: Iterable[Item], origin: str, round: int) -> None:
        rows = [{"id": it.id, "origin": origin, "round": round, "instruction": it.instruction, "input": it.input,
                 "output": it.output, "task_type": it.task_type, "meta": it.meta} for it in items]
        with self.store.transaction():
            store_items.add_items(self.store, scope, rows)
        if self._item_reads is not None:
            self._item_reads.pop(scope, None)

    def forget_items(self) -> None:
        """Let go of the items this stage run has read (a later :meth:`items`
        reads them again): a stage done with them frees their memory before
        its next step."""
        if self._item_reads is not None:
            self._item_reads.clear()

    def items(self, scope: str | None) -> list[Item]:
        """The items written under ``scope``, in store order. A stage's
        context reads a scope from the store once per stage run and answers
        later calls from what it read, until it writes to that scope
        (:meth:`add_items`). Rows under another key's scope are that key's,
        written before this stage ran (see :mod:`tapir.pipeline.engine`).
        The :class:`Item` objects are shared between calls: treat them as
        read-only (``dataclasses.replace`` for a changed copy)."""
        if scope is None:
            return []
        if self._item_reads is None:
            return self._read_items(scope)
        if scope not in self._item_reads:
            self._item_reads[scope] = self._read_items(scope)
        return list(self._item_reads[scope])

    def _read_items(self, scope: str) -> list[Item]:
        self.store_item_reads += 1
        out = []
        rows = store_items.item_rows(self.store, scope)
        for iid, instruction, input_text, output, task_type, meta, origin, rnd in rows:
            m = json.loads(meta) if meta else {}
            m.update({"origin": origin, "round": rnd})
            out.append(Item(iid, instruction, input_text or "", output, task_type, m))
        return out

    def responses(self, scope: str | None, role: str) -> dict[str, dict]:
        if scope is None:
            return {}
        return store_responses.responses_by_item(self.store, scope, role)

    def save_response(self, scope: str, item_id: str, role: str, model: str, round: int,
                      completion: Completion) -> None:
        with self.store.transaction():
            store_responses.add_response(self.store, scope, item_id, role, model, round, completion.text,
                                         completion.call_id)

    def set_scores(self, scope: str, rows: Sequence[tuple[str, str, int, float]]) -> None:
        """Upsert (item_id, name, round, value) scores under ``scope``."""
        with self.store.transaction():
            store_scores.set_scores(self.store, scope, rows)

    def scores(self, scope: str | None, name: str) -> dict[str, float]:
        if scope is None:
            return {}
        return store_scores.scores_by_item(self.store, scope, name)

    def labels(self, scope: str | None) -> dict[str, str]:
        if scope is None:
            return {}
        return store_classifications.labels_by_item(self.store, scope)
