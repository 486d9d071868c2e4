"""Append-only schema migrations, applied in order when a database opens.

Never edit or reorder a migration that has shipped: add a new one.
"""

from __future__ import annotations

from typing import Callable

import sqlite_utils

MIGRATIONS: list[tuple[str, Callable[[sqlite_utils.Database], None]]] = []


def migration(fn):
    MIGRATIONS.append((fn.__name__, fn))
    return fn


def migrate(db: sqlite_utils.Database) -> list[str]:
    """Apply pending migrations; return the names applied.

    Each migration runs in one ``BEGIN IMMEDIATE`` transaction together with
    its ``_migrations`` row: one that fails halfway leaves nothing behind
    (SQLite DDL is transactional, but Python's sqlite3 autocommits DDL
    outside an explicit BEGIN), and two processes opening a blank database
    at once do not both try to create the tables (the second waits for the
    write lock, then finds the migration applied).
    """
    done = set()
    if "_migrations" in db.table_names():
        done = {row[0] for row in db.execute("select name from _migrations")}
    applied = []
    for name, fn in MIGRATIONS:
        if name in done:
            continue
        db.conn.execute("BEGIN IMMEDIATE")
        try:
            db["_migrations"].create({"name": str, "applied_at": str}, pk="name", if_not_exists=True)
            if _is_applied(db, name):  # another process got there first
                db.conn.execute("COMMIT")
                continue
            fn(db)
            db.execute("insert into _migrations (name, applied_at) values (?, ?)", [name, _now(db)])
            db.conn.execute("COMMIT")
        except BaseException:
            if db.conn.in_transaction:
                db.conn.execute("ROLLBACK")
            raise
        applied.append(name)
    return applied


def _is_applied(db: sqlite_utils.Database, name: str) -> bool:
    return db.execute("select 1 from _migrations where name = ?", [name]).fetchone() is not None


def _now(db) -> str:
    return db.execute("select strftime('%Y-%m-%dT%H:%M:%fZ', 'now')").fetchone()[0]


@migration
def m001_initial(db: sqlite_utils.Database):
    db["runs"].create(
        {
            "id": str,
            "name": str,
            "config": str,  # JSON, secrets removed
            "config_hash": str,
            "tapir_version": str,
            "status": str,
            "created_at": str,
            "updated_at": str,
        },
        pk="id",
    )
    db["stages"].create(
        {
            "id": int,
            "run_id": str,
            "name": str,
            "round": int,
            "status": str,  # running | done | failed
            "started_at": str,
            "finished_at": str,
            "seconds": float,
            "info": str,  # JSON
        },
        pk="id",
        foreign_keys=[("run_id", "runs", "id")],
    )
    db["stages"].create_index(["run_id", "name", "round"], unique=True)

    db["items"].create(
        {
            "run_id": str,
            "id": str,
            "origin": str,  # seed | expanded | rewritten | benchmark
            "round": int,
            "instruction": str,
            "input": str,
            "output": str,
            "task_type": str,
            "meta": str,
        },
        pk=("run_id", "id"),
    )
    db["llm_calls"].create(
        {
            "id": int,
            "key": str,
            "model": str,
            "params": str,
            "messages": str,
            "sample": int,
            "response": str,
            "logprobs": str,
            "prompt_tokens": int,
            "completion_tokens": int,
            "cost": float,
            "latency_s": float,
            "error": str,
            "run_id": str,
            "created_at": str,
        },
        pk="id",
    )
    db["llm_calls"].create_index(["key"])
    db["responses"].create(
        {
            "id": int,
            "run_id": str,
            "item_id": str,
            "role": str,  # teacher | student | rewriter | ...
            "model": str,
            "round": int,
            "sample": int,
            "text": str,
            "llm_call_id": int,
            "created_at": str,
        },
        pk="id",
        foreign_keys=[("llm_call_id", "llm_calls", "id")],
    )
    db["responses"].create_index(["run_id", "item_id", "role", "model", "round", "sample"], unique=True)
    db["judgments"].create(
        {
            "id": int,
            "run_id": str,
            "item_id": str,
            "judge": str,
            "model": str,
            "kind": str,  # pairwise | single | preference | reference | loss
            "position": str,  # ab | ba | single
            "round": int,
            "response_a_id": int,
            "response_b_id": int,
            "score_a": float,
            "score_b": float,
            "preference": float,
            "raw": str,  # the judge's full text(s), JSON list
            "error": str,
            "created_at": str,
        },
        pk="id",
    )
    db["judgments"].create_index(["run_id", "item_id", "judge", "position", "round"], unique=True)
    db["classifications"].create(
        {
            "run_id": str,
            "item_id": str,
            "classifier": str,
            "label": str,
            "confidence": float,
            "created_at": str,
        },
        pk=("run_id", "item_id", "classifier"),
    )
    db["rewrites"].create(
        {
            "run_id": str,
            "item_id": str,
            "new_item_id": str,
            "rewriter": str,
            "round": int,
            "created_at": str,
        },
        pk=("run_id", "item_id", "rewriter", "round"),
    )
    db["checkpoints"].create(
        {
            "id": int,
            "run_id": str,
            "round": int,
            "path": str,
            "base_model": str,
            "trainer": str,
            "metrics": str,
            "created_at": str,
        },
        pk="id",
    )
    db["checkpoints"].create_index(["run_id", "round"], unique=True)
    db["scores"].create(
        {
            "run_id": str,
            "item_id": str,
            "name": str,  # mfd | teacher_score | student_score | weight | ...
            "round": int,
            "value": float,
        },
        pk=("run_id", "item_id", "name", "round"),
    )
    db["benchmark_results"].create(
        {
            "id": int,
            "benchmark": str,
            "model": str,
            "task": str,
            "metric": str,
            "value": float,
            "stderr": float,
            "n": int,
            "run_id": str,
            "meta": str,  # versions, settings
            "created_at": str,
        },
        pk="id",
    )
    db["benchmark_results"].create_index(["benchmark", "model", "task", "metric"], unique=True)


@migration
def m002_stage_keys_outcomes_locks(db: sqlite_utils.Database):
    """Stages keyed by what they read, item outcomes, locks, a call log with meaning.

    Pipeline rows (items, responses, judgments, scores, classifications,
    rewrites, checkpoints) carry in ``run_id`` the *scope* that wrote them:
    the key of the pipeline stage (or the benchmark run's id). A run lists
    its stages, each with its key, in ``stages``; a stage whose key is done
    in any run is reused, never recomputed.
    """
    db["stages"].add_column("key", str)
    db["stages"].add_column("reused_from", str)  # run id whose stage of the same key this run reused
    db["stages"].create_index(["key"])
    db["outcomes"].create(
        {
            "stage_key": str,
            "item_id": str,
            "status": str,  # ok | failed
            "reason": str,  # a line a person can read
            "error_kind": str,  # http_429, timeout, parse, duplicate, ...
            "http_status": int,
            "llm_call_id": int,
            "attempts": int,
            "updated_at": str,
        },
        pk=("stage_key", "item_id"),
        foreign_keys=[("llm_call_id", "llm_calls", "id")],
    )
    db["outcomes"].create_index(["stage_key", "status"])
    db["locks"].create(
        {
            "name": str,  # run:<id> | stage:<key> | call:<cache key>
            "pid": int,
            "host": str,
            "acquired_at": str,
            "heartbeat_at": float,  # unix time
        },
        pk="name",
    )
    for column, kind in (("stage_key", str), ("role", str), ("item_id", str), ("round", int),
                         ("finish_reason", str)):
        db["llm_calls"].add_column(column, kind)
    db["llm_calls"].create_index(["stage_key"])
    db["rewrites"].add_column("instruction", str)
    db["rewrites"].add_column("refined_instruction", str)
    db["rewrites"].add_column("error", str)


@migration
def m003_benchmark_results_per_run(db: sqlite_utils.Database):
    """Benchmark rows are kept per run: two runs of one model and benchmark
    with different settings (a subset, another judge) keep their own rows
    instead of overwriting each other's (benchmark, model, task, metric)."""
    db.execute("drop index if exists idx_benchmark_results_benchmark_model_task_metric")
    db["benchmark_results"].create_index(["run_id", "benchmark", "model", "task", "metric"], unique=True)
    db["benchmark_results"].create_index(["benchmark", "model"])


@migration
def m004_api_batches(db: sqlite_utils.Database):
    """Provider batch jobs (OpenAI-style files + batches endpoints): one row
    per submitted batch, and which requests (by cache key) it carries, so a
    re-run (also after kill -9) polls and collects instead of resubmitting."""
    db["api_batches"].create(
        {
            "id": str,  # ours, sent as metadata.tapir_batch
            "model": str,  # the backend's model id (keys redacted)
            "provider_batch_id": str,
            "input_file_id": str,
            "output_file_id": str,
            "error_file_id": str,
            "status": str,  # submitting | validating | in_progress | completed | collected | failed | expired | cancelled
            "n_requests": int,
            "error": str,
            "created_at": str,
            "updated_at": str,
        },
        pk="id",
    )
    db["api_batches"].create_index(["model", "status"])
    db["api_batch_requests"].create(
        {"batch_id": str, "request_key": str},
        pk=("batch_id", "request_key"),
        foreign_keys=[("batch_id", "api_batches", "id")],
    )
    db["api_batch_requests"].create_index(["request_key"])


def _json(column: str, path: str) -> str:
    """A JSON field of a text column, NULL (not an error) where the text is not JSON."""
    return f"case when json_valid({column}) then json_extract({column}, '{path}') end"


# Views for datasette and SQL users. Data rows carry the key of the stage that
# wrote them in ``run_id`` (their scope); ``stages`` maps a run to its keys,
# so every view joins through ``stages`` to name the run, stage and round.
_VIEWS = {
    "stage_summary": f"""
select s.run_id, r.name as run_name, s.name as stage, s.round, s.status,
       case when s.reused_from is not null then 'reused from ' || s.reused_from end as reused,
       {_json('s.info', '$.ok')} as ok, {_json('s.info', '$.failed')} as failed,
       {_json('s.info', '$.calls')} as calls, {_json('s.info', '$.tokens')} as tokens,
       {_json('s.info', '$.cost')} as cost, {_json('s.info', '$.truncated')} as truncated,
       s.seconds, {_json('s.info', '$.error')} as error, s.started_at, s.finished_at, s.key as stage_key
from stages s left join runs r on r.id = s.run_id""",
    "item_outcomes": """
select s.run_id, s.name as stage, s.round, o.item_id, o.status, o.reason, o.error_kind, o.http_status,
       o.attempts, o.llm_call_id, o.updated_at, o.stage_key
from outcomes o join stages s on s.key = o.stage_key""",
    "hard_items": """
select cut.run_id, hard.item_id, item.instruction, item.input, label.label as task_type,
       teacher.text as teacher_answer, student.text as student_answer,
       tscore.value as teacher_score, sscore.value as student_score, mfd.value as mfd,
       (select group_concat(j.position || ': ' || coalesce(j.raw, ''), char(10)) from judgments j
         where j.run_id = judge.key and j.item_id = hard.item_id) as judge_raw,
       (select group_concat(j.error, '; ') from judgments j
         where j.run_id = judge.key and j.item_id = hard.item_id) as judge_error,
       cut.key as seed_cut_key
from stages cut
join scores hard on hard.run_id = cut.key and hard.name = 'hard' and hard.value = 1
left join stages ingest on ingest.run_id = cut.run_id and ingest.name = 'ingest' and ingest.round = 0
left join items item on item.run_id = ingest.key and item.id = hard.item_id
left join stages ta on ta.run_id = cut.run_id and ta.name = 'teacher_answers' and ta.round = 0
left join responses teacher on teacher.run_id = ta.key and teacher.item_id = hard.item_id
     and teacher.role = 'teacher' and teacher.sample = 0
left join stages sa on sa.run_id = cut.run_id and sa.name = 'student_answers' and sa.round = 0
left join responses student on student.run_id = sa.key and student.item_id = hard.item_id
     and student.role = 'student' and student.sample = 0
left join stages judge on judge.run_id = cut.run_id and judge.name = 'judge' and judge.round = 0
left join scores tscore on tscore.run_id = judge.key and tscore.item_id = hard.item_id
     and tscore.name = 'teacher_score'
left join scores sscore on sscore.run_id = judge.key and sscore.item_id = hard.item_id
     and sscore.name = 'student_score'
left join scores mfd on mfd.run_id = judge.key and mfd.item_id = hard.item_id and mfd.name = 'mfd'
left join stages cls on cls.run_id = cut.run_id and cls.name = 'classify' and cls.round = 0
left join classifications label on label.run_id = cls.key and label.item_id = hard.item_id
where cut.name = 'seed_cut'""",
    "calls_by_role": """
select c.run_id, c.role, count(*) as calls, coalesce(sum(c.error is not null), 0) as errors,
       coalesce(sum(c.prompt_tokens), 0) as prompt_tokens, coalesce(sum(c.completion_tokens), 0) as completion_tokens,
       coalesce(sum(c.prompt_tokens), 0) + coalesce(sum(c.completion_tokens), 0) as tokens,
       round(coalesce(sum(c.cost), 0), 6) as cost, coalesce(sum(c.finish_reason = 'length'), 0) as truncated,
       round(sum(c.latency_s), 3) as latency_s, round(avg(c.latency_s), 3) as avg_latency_s,
       min(c.created_at) as first_call, max(c.created_at) as last_call
from llm_calls c group by c.run_id, c.role""",
    "calls_by_stage": """
select s.run_id, s.name as stage, s.round, c.role, c.model, count(*) as calls,
       coalesce(sum(c.error is not null), 0) as errors,
       coalesce(sum(c.prompt_tokens), 0) + coalesce(sum(c.completion_tokens), 0) as tokens,
       round(coalesce(sum(c.cost), 0), 6) as cost, coalesce(sum(c.finish_reason = 'length'), 0) as truncated,
       round(sum(c.latency_s), 3) as latency_s, c.stage_key
from llm_calls c join stages s on s.key = c.stage_key and s.run_id = c.run_id
group by s.run_id, s.name, s.round, c.role, c.model, c.stage_key""",
    "benchmark_scores": f"""
select b.model, b.benchmark, b.task, b.metric, b.value, b.stderr, b.n,
       {_json('b.meta', '$.failures')} as failures, {_json('b.meta', '$.judge')} as judge,
       {_json('b.meta', '$.judge_mode')} as judge_mode, {_json('b.meta', '$.subset')} as subset,
       {_json('b.meta', '$.data_version')} as data_version, b.run_id, b.created_at
from benchmark_results b""",
    "item_history": """
select s.run_id, t.id as item_id, s.name as stage, s.round, 'item (' || coalesce(t.origin, '?') || ')' as what,
       t.instruction as text, null as value, s.key as stage_key
from items t join stages s on s.key = t.run_id
union all
select s.run_id, t.item_id, s.name, s.round, coalesce(t.role, '?') || ' answer', t.text, null, s.key
from responses t join stages s on s.key = t.run_id
union all
select s.run_id, t.item_id, s.name, s.round, 'judgment ' || coalesce(t.position, ''),
       coalesce(t.error, t.raw), t.score_a - t.score_b, s.key
from judgments t join stages s on s.key = t.run_id
union all
select s.run_id, t.item_id, s.name, s.round, t.name, null, t.value, s.key
from scores t join stages s on s.key = t.run_id
union all
select s.run_id, t.item_id, s.name, s.round, 'task type', t.label, t.confidence, s.key
from classifications t join stages s on s.key = t.run_id
union all
select s.run_id, t.item_id, s.name, s.round, 'rewritten as ' || coalesce(t.new_item_id, '?'),
       coalesce(t.error, t.refined_instruction), null, s.key
from rewrites t join stages s on s.key = t.run_id
union all
select s.run_id, t.item_id, s.name, s.round, 'outcome ' || t.status, t.reason, t.attempts, s.key
from outcomes t join stages s on s.key = t.stage_key""",
}


@migration
def m005_views_and_judgment_foreign_keys(db: sqlite_utils.Database):
    """Views for browsing (datasette, SQL): stage_summary, item_outcomes,
    hard_items, calls_by_role, calls_by_stage, benchmark_scores,
    item_history; and foreign keys from judgments.response_a_id /
    response_b_id to responses.id (a dangling id, which pointed nowhere, is
    set to NULL first).

    Item rows cannot take a foreign key to ``items``: an item is
    (scope, id), and the rows about it live under other scopes (the key of
    the stage that wrote them); ``item_history`` gathers them per run.
    """
    for column in ("response_a_id", "response_b_id"):
        db.execute(f"update judgments set {column} = null where {column} is not null "
                   f"and {column} not in (select id from responses)")
    # transform_sql, not transform(): its statements run inside this
    # migration's transaction (transform() would commit on its own).
    for sql in db["judgments"].transform_sql(
        add_foreign_keys=[("response_a_id", "responses", "id"), ("response_b_id", "responses", "id")]
    ):
        db.execute(sql)
    for name, sql in _VIEWS.items():
        db.execute(f"create view {name} as {sql.strip()}")


@migration
def m006_call_provenance(db: sqlite_utils.Database):
    """Provenance of every number: the model the provider says answered a
    call (``provider_model``, which may differ from the one asked for: an
    alias resolved to a dated snapshot, a router's pick) and its
    ``system_fingerprint`` (the serving configuration), per call; and per
    judgment how its score was read (``read_by``: logprobs, reference
    parser, lenient parser, lenient fallback, ...)."""
    db["llm_calls"].add_column("provider_model", str)
    db["llm_calls"].add_column("system_fingerprint", str)
    db["judgments"].add_column("read_by", str)


@migration
def m007_call_attempts(db: sqlite_utils.Database):
    """Every attempt of an LLM call, failed ones included: ``llm_calls.attempts``
    (how many were sent), ``attempt_log`` (JSON list: n, outcome, http_status,
    seconds, billed yes / maybe / no: a timed-out attempt may still have been
    generated and billed) and ``failure_kind`` (transient | permanent |
    content) of a failed call."""
    db["llm_calls"].add_column("attempts", int)
    db["llm_calls"].add_column("attempt_log", str)
    db["llm_calls"].add_column("failure_kind", str)


@migration
def m008_fresh_draws(db: sqlite_utils.Database):
    """Content failures retried with a fresh draw: ``outcomes.draws`` (how
    many draws of the item failed on their content: a malformed or rejected
    reply; null for a failed call, which a re-run asks again as it was) and
    ``outcomes.reproduces`` (1 when the same inputs give the same reply:
    greedy decoding from a local model; a re-run does not ask again)."""
    db["outcomes"].add_column("draws", int)
    db["outcomes"].add_column("reproduces", int)


# The tables whose ``run_id`` (``stage_key`` in outcomes) holds the key of
# the stage that wrote the row (or a benchmark run's id): its *scope*.
SCOPED_TABLES = ("items", "responses", "judgments", "scores", "classifications", "rewrites", "checkpoints",
                 "outcomes")
# The tables whose rows are about one item, with ``item_id``; each has
# ``item_uid``, a foreign key to ``items.uid``.
ITEM_TABLES = ("responses", "judgments", "scores", "classifications", "rewrites", "outcomes")

# The item a row (scope, item_id) is about: the item of that id in the same
# scope (a benchmark run's rows), else in a scope of a run that has the
# row's scope as a stage (a pipeline stage reads the items that its run's
# ingest, expand or rewrite stages wrote); the latest written when several.
_ITEM_OF = """coalesce(
  (select i.uid from items i where i.scope = {scope} and i.id = {item_id}),
  (select i.uid from items i where i.id = {item_id} and i.scope in (
     select other.key from stages mine join stages other on other.run_id = mine.run_id
     where mine.key = {scope} and other.key is not null)
   order by i.rowid desc limit 1))"""


def item_link_trigger(table: str) -> str:
    """The trigger that fills ``item_uid`` of a new ``table`` row that has
    none (every writer, the plugins' too, gets the link without knowing it)."""
    return (f"create trigger {table}_item_uid after insert on {table} when new.item_uid is null begin "
            f"update {table} set item_uid = {_ITEM_OF.format(item_id='new.item_id', scope='new.scope')} "
            f"where rowid = new.rowid; end")


_VIEWS_M009 = dict(_VIEWS)
_VIEWS_M009["item_outcomes"] = """
select s.run_id, s.name as stage, s.round, o.item_id, o.status, o.reason, o.error_kind, o.http_status,
       o.attempts, o.llm_call_id, o.updated_at, o.scope as stage_key, o.item_uid
from outcomes o join stages s on s.key = o.scope"""
_VIEWS_M009["hard_items"] = _VIEWS["hard_items"].replace("j.run_id =", "j.scope =").replace(
    ".run_id = judge.key", ".scope = judge.key").replace("hard.run_id = cut.key", "hard.scope = cut.key").replace(
    "item.run_id = ingest.key", "item.scope = ingest.key").replace("teacher.run_id = ta.key", "teacher.scope = ta.key"
    ).replace("student.run_id = sa.key", "student.scope = sa.key").replace(
    "label.run_id = cls.key", "label.scope = cls.key").replace(
    "j.position || ': ' || coalesce(j.raw, '')", "j.position || ': ' || coalesce(j.raw, '') || coalesce(' ' || j.details, '')")
_VIEWS_M009["item_history"] = _VIEWS["item_history"].replace("s.key = t.run_id", "s.key = t.scope").replace(
    "s.key = t.stage_key", "s.key = t.scope")


@migration
def m009_scope_and_item_fks(db: sqlite_utils.Database):
    """One name for one thing, and rows linked to their item.

    * ``run_id`` of items, responses, judgments, scores, classifications,
      rewrites and checkpoints, and ``stage_key`` of outcomes, hold the key
      of the stage that wrote the row (or a benchmark run's id): renamed
      ``scope``. ``stages.run_id``, ``llm_calls.run_id`` and
      ``benchmark_results.run_id`` hold run ids and keep their name.
    * ``items.uid``: the content-addressed id of an item row
      (:func:`tapir.store.items.item_uid`), unique.
    * ``item_uid`` on responses, judgments, scores, classifications,
      rewrites and outcomes: a foreign key to ``items.uid``, filled for the
      old rows here and for new rows by a trigger per table. A row about
      no stored item (an expand stage's ``draw-N`` outcomes) keeps NULL.
    * ``judgments.raw`` is a JSON list of the judge's texts everywhere; the
      judge stage's details (read_by counts, spreads, order errors), which
      it kept next to them in a JSON object, move to ``judgments.details``.
    * The views join on ``scope``; ``item_outcomes`` shows ``item_uid``;
      ``hard_items.judge_raw`` shows each judgment's details after its texts.
    """
    from tapir.store.uids import item_uid

    for name in db.view_names():
        db.execute(f"drop view [{name}]")
    for table in SCOPED_TABLES:
        old = "stage_key" if table == "outcomes" else "run_id"
        db.execute(f"alter table [{table}] rename column [{old}] to [scope]")
    db.execute("alter table items add column uid text")
    rows = db.execute("select rowid, scope, id, instruction, input, output from items").fetchall()
    db.conn.executemany("update items set uid = ? where rowid = ?",
                        [(item_uid(scope, iid, ins, inp, out), rowid) for rowid, scope, iid, ins, inp, out in rows])
    db.execute("create unique index idx_items_uid on items (uid)")
    for table in ITEM_TABLES:
        db.execute(f"alter table [{table}] add column item_uid text references items(uid)")
        db.execute(f"update [{table}] set item_uid = {_ITEM_OF.format(item_id=f'[{table}].item_id', scope=f'[{table}].scope')}")
        db.execute(f"create index idx_{table}_item_uid on [{table}] (item_uid)")
        db.execute(item_link_trigger(table))
    db.execute("alter table judgments add column details text")
    db.execute("update judgments set details = json_extract(raw, '$.details'), "
               "raw = coalesce(json_extract(raw, '$.raw'), '[]') "
               "where json_valid(raw) and json_type(raw) = 'object'")
    for name, sql in _VIEWS_M009.items():
        db.execute(f"create view {name} as {sql.strip()}")
