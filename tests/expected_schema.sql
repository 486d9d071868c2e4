CREATE TABLE "_migrations" (
   "name" TEXT PRIMARY KEY,
   "applied_at" TEXT
);
CREATE TABLE "runs" (
   "id" TEXT PRIMARY KEY,
   "name" TEXT,
   "config" TEXT,
   "config_hash" TEXT,
   "tapir_version" TEXT,
   "status" TEXT,
   "created_at" TEXT,
   "updated_at" TEXT
);
CREATE TABLE "stages" (
   "id" INTEGER PRIMARY KEY,
   "run_id" TEXT REFERENCES "runs"("id"),
   "name" TEXT,
   "round" INTEGER,
   "status" TEXT,
   "started_at" TEXT,
   "finished_at" TEXT,
   "seconds" REAL,
   "info" TEXT
, "key" TEXT, "reused_from" TEXT);
CREATE UNIQUE INDEX "idx_stages_run_id_name_round"
    ON "stages" ("run_id", "name", "round");
CREATE TABLE "items" (
   "scope" TEXT,
   "id" TEXT,
   "origin" TEXT,
   "round" INTEGER,
   "instruction" TEXT,
   "input" TEXT,
   "output" TEXT,
   "task_type" TEXT,
   "meta" TEXT, uid text,
   PRIMARY KEY ("scope", "id")
);
CREATE TABLE "llm_calls" (
   "id" INTEGER PRIMARY KEY,
   "key" TEXT,
   "model" TEXT,
   "params" TEXT,
   "messages" TEXT,
   "sample" INTEGER,
   "response" TEXT,
   "logprobs" TEXT,
   "prompt_tokens" INTEGER,
   "completion_tokens" INTEGER,
   "cost" REAL,
   "latency_s" REAL,
   "error" TEXT,
   "run_id" TEXT,
   "created_at" TEXT
, "stage_key" TEXT, "role" TEXT, "item_id" TEXT, "round" INTEGER, "finish_reason" TEXT, "provider_model" TEXT, "system_fingerprint" TEXT, "attempts" INTEGER, "attempt_log" TEXT, "failure_kind" TEXT);
CREATE INDEX "idx_llm_calls_key"
    ON "llm_calls" ("key");
CREATE TABLE "responses" (
   "id" INTEGER PRIMARY KEY,
   "scope" TEXT,
   "item_id" TEXT,
   "role" TEXT,
   "model" TEXT,
   "round" INTEGER,
   "sample" INTEGER,
   "text" TEXT,
   "llm_call_id" INTEGER REFERENCES "llm_calls"("id"),
   "created_at" TEXT
, item_uid text references items(uid));
CREATE UNIQUE INDEX "idx_responses_run_id_item_id_role_model_round_sample"
    ON "responses" ("scope", "item_id", "role", "model", "round", "sample");
CREATE TABLE "classifications" (
   "scope" TEXT,
   "item_id" TEXT,
   "classifier" TEXT,
   "label" TEXT,
   "confidence" REAL,
   "created_at" TEXT, item_uid text references items(uid),
   PRIMARY KEY ("scope", "item_id", "classifier")
);
CREATE TABLE "rewrites" (
   "scope" TEXT,
   "item_id" TEXT,
   "new_item_id" TEXT,
   "rewriter" TEXT,
   "round" INTEGER,
   "created_at" TEXT, "instruction" TEXT, "refined_instruction" TEXT, "error" TEXT, item_uid text references items(uid),
   PRIMARY KEY ("scope", "item_id", "rewriter", "round")
);
CREATE TABLE "checkpoints" (
   "id" INTEGER PRIMARY KEY,
   "scope" TEXT,
   "round" INTEGER,
   "path" TEXT,
   "base_model" TEXT,
   "trainer" TEXT,
   "metrics" TEXT,
   "created_at" TEXT
);
CREATE UNIQUE INDEX "idx_checkpoints_run_id_round"
    ON "checkpoints" ("scope", "round");
CREATE TABLE "scores" (
   "scope" TEXT,
   "item_id" TEXT,
   "name" TEXT,
   "round" INTEGER,
   "value" REAL, item_uid text references items(uid),
   PRIMARY KEY ("scope", "item_id", "name", "round")
);
CREATE TABLE "benchmark_results" (
   "id" INTEGER PRIMARY KEY,
   "benchmark" TEXT,
   "model" TEXT,
   "task" TEXT,
   "metric" TEXT,
   "value" REAL,
   "stderr" REAL,
   "n" INTEGER,
   "run_id" TEXT,
   "meta" TEXT,
   "created_at" TEXT
);
CREATE INDEX "idx_stages_key"
    ON "stages" ("key");
CREATE TABLE "outcomes" (
   "scope" TEXT,
   "item_id" TEXT,
   "status" TEXT,
   "reason" TEXT,
   "error_kind" TEXT,
   "http_status" INTEGER,
   "llm_call_id" INTEGER REFERENCES "llm_calls"("id"),
   "attempts" INTEGER,
   "updated_at" TEXT, "draws" INTEGER, "reproduces" INTEGER, item_uid text references items(uid),
   PRIMARY KEY ("scope", "item_id")
);
CREATE INDEX "idx_outcomes_stage_key_status"
    ON "outcomes" ("scope", "status");
CREATE TABLE "locks" (
   "name" TEXT PRIMARY KEY,
   "pid" INTEGER,
   "host" TEXT,
   "acquired_at" TEXT,
   "heartbeat_at" REAL
);
CREATE INDEX "idx_llm_calls_stage_key"
    ON "llm_calls" ("stage_key");
CREATE UNIQUE INDEX "idx_benchmark_results_run_id_benchmark_model_task_metric"
    ON "benchmark_results" ("run_id", "benchmark", "model", "task", "metric");
CREATE INDEX "idx_benchmark_results_benchmark_model"
    ON "benchmark_results" ("benchmark", "model");
CREATE TABLE "api_batches" (
   "id" TEXT PRIMARY KEY,
   "model" TEXT,
   "provider_batch_id" TEXT,
   "input_file_id" TEXT,
   "output_file_id" TEXT,
   "error_file_id" TEXT,
   "status" TEXT,
   "n_requests" INTEGER,
   "error" TEXT,
   "created_at" TEXT,
   "updated_at" TEXT
);
CREATE INDEX "idx_api_batches_model_status"
    ON "api_batches" ("model", "status");
CREATE TABLE "api_batch_requests" (
   "batch_id" TEXT REFERENCES "api_batches"("id"),
   "request_key" TEXT,
   PRIMARY KEY ("batch_id", "request_key")
);
CREATE INDEX "idx_api_batch_requests_request_key"
    ON "api_batch_requests" ("request_key");
CREATE TABLE "judgments" (
   "id" INTEGER PRIMARY KEY,
   "scope" TEXT,
   "item_id" TEXT,
   "judge" TEXT,
   "model" TEXT,
   "kind" TEXT,
   "position" TEXT,
   "round" INTEGER,
   "response_a_id" INTEGER REFERENCES "responses"("id"),
   "response_b_id" INTEGER REFERENCES "responses"("id"),
   "score_a" REAL,
   "score_b" REAL,
   "preference" REAL,
   "raw" TEXT,
   "error" TEXT,
   "created_at" TEXT
, "read_by" TEXT, item_uid text references items(uid), details text);
CREATE UNIQUE INDEX "idx_judgments_run_id_item_id_judge_position_round"
    ON "judgments" ("scope", "item_id", "judge", "position", "round");
CREATE UNIQUE INDEX idx_items_uid on items (uid);
CREATE INDEX idx_responses_item_uid on [responses] (item_uid);
CREATE TRIGGER responses_item_uid after insert on responses when new.item_uid is null begin update responses set item_uid = coalesce(
  (select i.uid from items i where i.scope = new.scope and i.id = new.item_id),
  (select i.uid from items i where i.id = new.item_id and i.scope in (
     select other.key from stages mine join stages other on other.run_id = mine.run_id
     where mine.key = new.scope and other.key is not null)
   order by i.rowid desc limit 1)) where rowid = new.rowid; end;
CREATE INDEX idx_judgments_item_uid on [judgments] (item_uid);
CREATE TRIGGER judgments_item_uid after insert on judgments when new.item_uid is null begin update judgments set item_uid = coalesce(
  (select i.uid from items i where i.scope = new.scope and i.id = new.item_id),
  (select i.uid from items i where i.id = new.item_id and i.scope in (
     select other.key from stages mine join stages other on other.run_id = mine.run_id
     where mine.key = new.scope and other.key is not null)
   order by i.rowid desc limit 1)) where rowid = new.rowid; end;
CREATE INDEX idx_scores_item_uid on [scores] (item_uid);
CREATE TRIGGER scores_item_uid after insert on scores when new.item_uid is null begin update scores set item_uid = coalesce(
  (select i.uid from items i where i.scope = new.scope and i.id = new.item_id),
  (select i.uid from items i where i.id = new.item_id and i.scope in (
     select other.key from stages mine join stages other on other.run_id = mine.run_id
     where mine.key = new.scope and other.key is not null)
   order by i.rowid desc limit 1)) where rowid = new.rowid; end;
CREATE INDEX idx_classifications_item_uid on [classifications] (item_uid);
CREATE TRIGGER classifications_item_uid after insert on classifications when new.item_uid is null begin update classifications set item_uid = coalesce(
  (select i.uid from items i where i.scope = new.scope and i.id = new.item_id),
  (select i.uid from items i where i.id = new.item_id and i.scope in (
     select other.key from stages mine join stages other on other.run_id = mine.run_id
     where mine.key = new.scope and other.key is not null)
   order by i.rowid desc limit 1)) where rowid = new.rowid; end;
CREATE INDEX idx_rewrites_item_uid on [rewrites] (item_uid);
CREATE TRIGGER rewrites_item_uid after insert on rewrites when new.item_uid is null begin update rewrites set item_uid = coalesce(
  (select i.uid from items i where i.scope = new.scope and i.id = new.item_id),
  (select i.uid from items i where i.id = new.item_id and i.scope in (
     select other.key from stages mine join stages other on other.run_id = mine.run_id
     where mine.key = new.scope and other.key is not null)
   order by i.rowid desc limit 1)) where rowid = new.rowid; end;
CREATE INDEX idx_outcomes_item_uid on [outcomes] (item_uid);
CREATE TRIGGER outcomes_item_uid after insert on outcomes when new.item_uid is null begin update outcomes set item_uid = coalesce(
  (select i.uid from items i where i.scope = new.scope and i.id = new.item_id),
  (select i.uid from items i where i.id = new.item_id and i.scope in (
     select other.key from stages mine join stages other on other.run_id = mine.run_id
     where mine.key = new.scope and other.key is not null)
   order by i.rowid desc limit 1)) where rowid = new.rowid; end;
CREATE VIEW stage_summary as select s.run_id, r.name as run_name, s.name as stage, s.round, s.status,
       case when s.reused_from is not null then 'reused from ' || s.reused_from end as reused,
       case when json_valid(s.info) then json_extract(s.info, '$.ok') end as ok, case when json_valid(s.info) then json_extract(s.info, '$.failed') end as failed,
       case when json_valid(s.info) then json_extract(s.info, '$.calls') end as calls, case when json_valid(s.info) then json_extract(s.info, '$.tokens') end as tokens,
       case when json_valid(s.info) then json_extract(s.info, '$.cost') end as cost, case when json_valid(s.info) then json_extract(s.info, '$.truncated') end as truncated,
       s.seconds, case when json_valid(s.info) then json_extract(s.info, '$.error') end as error, s.started_at, s.finished_at, s.key as stage_key
from stages s left join runs r on r.id = s.run_id;
CREATE VIEW item_outcomes as select s.run_id, s.name as stage, s.round, o.item_id, o.status, o.reason, o.error_kind, o.http_status,
       o.attempts, o.llm_call_id, o.updated_at, o.scope as stage_key, o.item_uid
from outcomes o join stages s on s.key = o.scope;
CREATE VIEW hard_items as select cut.run_id, hard.item_id, item.instruction, item.input, label.label as task_type,
       teacher.text as teacher_answer, student.text as student_answer,
       tscore.value as teacher_score, sscore.value as student_score, mfd.value as mfd,
       (select group_concat(j.position || ': ' || coalesce(j.raw, '') || coalesce(' ' || j.details, ''), char(10)) from judgments j
         where j.scope = judge.key and j.item_id = hard.item_id) as judge_raw,
       (select group_concat(j.error, '; ') from judgments j
         where j.scope = judge.key and j.item_id = hard.item_id) as judge_error,
       cut.key as seed_cut_key
from stages cut
join scores hard on hard.scope = cut.key and hard.name = 'hard' and hard.value = 1
left join stages ingest on ingest.run_id = cut.run_id and ingest.name = 'ingest' and ingest.round = 0
left join items item on item.scope = ingest.key and item.id = hard.item_id
left join stages ta on ta.run_id = cut.run_id and ta.name = 'teacher_answers' and ta.round = 0
left join responses teacher on teacher.scope = ta.key and teacher.item_id = hard.item_id
     and teacher.role = 'teacher' and teacher.sample = 0
left join stages sa on sa.run_id = cut.run_id and sa.name = 'student_answers' and sa.round = 0
left join responses student on student.scope = sa.key and student.item_id = hard.item_id
     and student.role = 'student' and student.sample = 0
left join stages judge on judge.run_id = cut.run_id and judge.name = 'judge' and judge.round = 0
left join scores tscore on tscore.scope = judge.key and tscore.item_id = hard.item_id
     and tscore.name = 'teacher_score'
left join scores sscore on sscore.scope = judge.key and sscore.item_id = hard.item_id
     and sscore.name = 'student_score'
left join scores mfd on mfd.scope = judge.key and mfd.item_id = hard.item_id and mfd.name = 'mfd'
left join stages cls on cls.run_id = cut.run_id and cls.name = 'classify' and cls.round = 0
left join classifications label on label.scope = cls.key and label.item_id = hard.item_id
where cut.name = 'seed_cut';
CREATE VIEW calls_by_role as select c.run_id, c.role, count(*) as calls, coalesce(sum(c.error is not null), 0) as errors,
       coalesce(sum(c.prompt_tokens), 0) as prompt_tokens, coalesce(sum(c.completion_tokens), 0) as completion_tokens,
       coalesce(sum(c.prompt_tokens), 0) + coalesce(sum(c.completion_tokens), 0) as tokens,
       round(coalesce(sum(c.cost), 0), 6) as cost, coalesce(sum(c.finish_reason = 'length'), 0) as truncated,
       round(sum(c.latency_s), 3) as latency_s, round(avg(c.latency_s), 3) as avg_latency_s,
       min(c.created_at) as first_call, max(c.created_at) as last_call
from llm_calls c group by c.run_id, c.role;
CREATE VIEW calls_by_stage as select s.run_id, s.name as stage, s.round, c.role, c.model, count(*) as calls,
       coalesce(sum(c.error is not null), 0) as errors,
       coalesce(sum(c.prompt_tokens), 0) + coalesce(sum(c.completion_tokens), 0) as tokens,
       round(coalesce(sum(c.cost), 0), 6) as cost, coalesce(sum(c.finish_reason = 'length'), 0) as truncated,
       round(sum(c.latency_s), 3) as latency_s, c.stage_key
from llm_calls c join stages s on s.key = c.stage_key and s.run_id = c.run_id
group by s.run_id, s.name, s.round, c.role, c.model, c.stage_key;
CREATE VIEW benchmark_scores as select b.model, b.benchmark, b.task, b.metric, b.value, b.stderr, b.n,
       case when json_valid(b.meta) then json_extract(b.meta, '$.failures') end as failures, case when json_valid(b.meta) then json_extract(b.meta, '$.judge') end as judge,
       case when json_valid(b.meta) then json_extract(b.meta, '$.judge_mode') end as judge_mode, case when json_valid(b.meta) then json_extract(b.meta, '$.subset') end as subset,
       case when json_valid(b.meta) then json_extract(b.meta, '$.data_version') end as data_version, b.run_id, b.created_at
from benchmark_results b;
CREATE VIEW item_history as select s.run_id, t.id as item_id, s.name as stage, s.round, 'item (' || coalesce(t.origin, '?') || ')' as what,
       t.instruction as text, null as value, s.key as stage_key
from items t join stages s on s.key = t.scope
union all
select s.run_id, t.item_id, s.name, s.round, coalesce(t.role, '?') || ' answer', t.text, null, s.key
from responses t join stages s on s.key = t.scope
union all
select s.run_id, t.item_id, s.name, s.round, 'judgment ' || coalesce(t.position, ''),
       coalesce(t.error, t.raw), t.score_a - t.score_b, s.key
from judgments t join stages s on s.key = t.scope
union all
select s.run_id, t.item_id, s.name, s.round, t.name, null, t.value, s.key
from scores t join stages s on s.key = t.scope
union all
select s.run_id, t.item_id, s.name, s.round, 'task type', t.label, t.confidence, s.key
from classifications t join stages s on s.key = t.scope
union all
select s.run_id, t.item_id, s.name, s.round, 'rewritten as ' || coalesce(t.new_item_id, '?'),
       coalesce(t.error, t.refined_instruction), null, s.key
from rewrites t join stages s on s.key = t.scope
union all
select s.run_id, t.item_id, s.name, s.round, 'outcome ' || t.status, t.reason, t.attempts, s.key
from outcomes t join stages s on s.key = t.scope;
