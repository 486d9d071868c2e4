"""What every pipeline stage shares: config, store, run, output folder, and
the role components built from the config (loaded once, on first use)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable

from tapir.config import ModelRef, PipelineConfig
from tapir.errors import TapirError
from tapir.plugins import registry
from tapir.roles import Completion, Item
from tapir.runs import Run
from tapir.store.db import Store, dumps, utcnow


def _accepts(factory, name: str) -> bool:
    import inspect

    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


@dataclass
class Context:
    config: PipelineConfig
    store: Store
    run: Run
    base_dir: Path  # where relative paths in the config are read from
    out_dir: Path
    _backends: dict[str, Any] = field(default_factory=dict)

    # --- models and roles ------------------------------------------------

    def backend(self, ref: ModelRef | str, options: dict[str, Any] | None = None):
        """A cached backend for a model reference (loaded once per run)."""
        from tapir.models import load_cached

        model_id = ref if isinstance(ref, str) else ref.model
        opts = dict(options or {}) if isinstance(ref, str) else {**ref.options, **(options or {})}
        key = dumps([model_id, opts])
        if key not in self._backends:
            self._backends[key] = load_cached(model_id, self.store, self.run.id, opts)
        return self._backends[key]

    def _role(self, role: str, name: str, ref: ModelRef | None, options: dict[str, Any], **extra):
        component = registry().get(role, name)
        backend = self.backend(ref) if ref is not None else None
        gen = {}
        if ref is not None:
            gen = {"max_new_tokens": ref.generation.max_new_tokens, "temperature": ref.generation.temperature}
        return component.create(backend, options={**gen, **options, **extra})

    @cached_property
    def teacher(self):
        cfg = self.config.teacher
        return self._role("teachers", cfg.name, cfg.model, cfg.options)

    @cached_property
    def rewriter(self):
        cfg = self.config.rewriter
        if cfg is None:
            return None
        return self._role("rewriters", cfg.name, cfg.model, cfg.options)

    @cached_property
    def classifier(self):
        cfg = self.config.classifier
        options = dict(cfg.options)
        for key in ("labels_path", "model_dir"):
            if key in options and options[key]:
                options[key] = str(self.path(options[key]))
        if _accepts(registry().get("classifiers", cfg.name).load(), "model_dir"):
            # A trained classifier lives with the run's outputs unless the config says where.
            options.setdefault("model_dir", str(self.out_dir / "classifier"))
        return self._role("classifiers", cfg.name, cfg.model, options)

    def judge(self, student_path: str | None = None):
        """The MFD judge. Judges with ``needs_student`` score with the student."""
        cfg = self.config.judge
        component = registry().get("judges", cfg.name)
        factory = component.load()
        if getattr(factory, "needs_student", False):
            if student_path is None:
                raise TapirError(f"judge '{cfg.name}' needs the student model")
            backend = self.backend(f"hf:{student_path}", self.config.student.options)
            return factory(backend, **cfg.options)
        backend = self.backend(cfg.model) if cfg.model is not None else None
        return factory(backend, **cfg.options)

    def judge_reads_student_answer(self) -> bool:
        """False for judges (student-loss) that score the teacher's answer
        under the student: then the student need not answer at all."""
        factory = registry().get("judges", self.config.judge.name).load()
        return getattr(factory, "reads_student_answer", True)

    @cached_property
    def trainer(self):
        return registry().get("trainers", self.config.trainer.name).create(options=self.config.trainer.options)

    def path(self, value: str) -> Path:
        from tapir.config import resolve_path

        return resolve_path(value, self.base_dir)

    # --- items and responses ------------------------------------------------

    def add_items(self, items: Iterable[Item], origin: str, round: int) -> None:
        rows = [
            {
                "run_id": self.run.id,
                "id": it.id,
                "origin": origin,
                "round": round,
                "instruction": it.instruction,
                "input": it.input,
                "output": it.output,
                "task_type": it.task_type,
                "meta": dumps(it.meta),
            }
            for it in items
        ]
        with self.store.db.conn:
            self.store["items"].insert_all(rows, ignore=True)

    def items(self, where: str = "1", params: list | tuple = ()) -> list[Item]:
        rows = self.store.execute(
            f"select id, instruction, input, output, task_type, meta, origin, round from items "
            f"where run_id = ? and ({where}) order by rowid",
            [self.run.id, *params],
        ).fetchall()
        out = []
        for iid, instruction, input_text, output, task_type, meta, origin, rnd in rows:
            m = json.loads(meta) if meta else {}
            m.update({"origin": origin, "round": rnd})
            out.append(Item(iid, instruction, input_text or "", output, task_type, m))
        return out

    def responses(self, role: str, round: int) -> dict[str, dict]:
        """This round's responses of ``role``, by item id."""
        sql = "select * from responses where run_id = ? and role = ? and round = ?"
        return {r["item_id"]: r for r in self.store.db.query(sql, [self.run.id, role, round])}

    def teacher_responses(self, up_to_round: int) -> dict[str, dict]:
        """The teacher's answers from rounds 0..up_to_round, by item id (each
        item is answered in the round it was added)."""
        sql = "select * from responses where run_id = ? and role = 'teacher' and round <= ?"
        return {r["item_id"]: r for r in self.store.db.query(sql, [self.run.id, up_to_round])}

    def save_response(self, item_id: str, role: str, model: str, round: int, completion: Completion) -> None:
        with self.store.db.conn:
            self.store["responses"].insert(
                {
                    "run_id": self.run.id,
                    "item_id": item_id,
                    "role": role,
                    "model": model,
                    "round": round,
                    "sample": 0,
                    "text": completion.text,
                    "llm_call_id": completion.call_id,
                    "created_at": utcnow(),
                },
                ignore=True,
            )

    def set_score(self, item_id: str, name: str, round: int, value: float) -> None:
        self.store["scores"].upsert(
            {"run_id": self.run.id, "item_id": item_id, "name": name, "round": round, "value": value},
            pk=("run_id", "item_id", "name", "round"),
        )

    def scores(self, name: str, round: int) -> dict[str, float]:
        rows = self.store.execute(
            "select item_id, value from scores where run_id = ? and name = ? and round = ?",
            [self.run.id, name, round],
        ).fetchall()
        return dict(rows)
