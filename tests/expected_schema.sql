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
   "run_id" TEXT,
   "id" TEXT,
   "origin" TEXT,
   "round" INTEGER,
   "instruction" TEXT,
   "input" TEXT,
   "output" TEXT,
   "task_type" TEXT,
   "meta" TEXT,
   PRIMARY KEY ("run_id", "id")
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
, "stage_key" TEXT, "role" TEXT, "item_id" TEXT, "round" INTEGER, "finish_reason" TEXT);
CREATE INDEX "idx_llm_calls_key"
    ON "llm_calls" ("key");
CREATE TABLE "responses" (
   "id" INTEGER PRIMARY KEY,
   "run_id" TEXT,
   "item_id" TEXT,
   "role" TEXT,
   "model" TEXT,
   "round" INTEGER,
   "sample" INTEGER,
   "text" TEXT,
   "llm_call_id" INTEGER REFERENCES "llm_calls"("id"),
   "created_at" TEXT
);
CREATE UNIQUE INDEX "idx_responses_run_id_item_id_role_model_round_sample"
    ON "responses" ("run_id", "item_id", "role", "model", "round", "sample");
CREATE TABLE "judgments" (
   "id" INTEGER PRIMARY KEY,
   "run_id" TEXT,
   "item_id" TEXT,
   "judge" TEXT,
   "model" TEXT,
   "kind" TEXT,
   "position" TEXT,
   "round" INTEGER,
   "response_a_id" INTEGER,
   "response_b_id" INTEGER,
   "score_a" REAL,
   "score_b" REAL,
   "preference" REAL,
   "raw" TEXT,
   "error" TEXT,
   "created_at" TEXT
);
CREATE UNIQUE INDEX "idx_judgments_run_id_item_id_judge_position_round"
    ON "judgments" ("run_id", "item_id", "judge", "position", "round");
CREATE TABLE "classifications" (
   "run_id" TEXT,
   "item_id" TEXT,
   "classifier" TEXT,
   "label" TEXT,
   "confidence" REAL,
   "created_at" TEXT,
   PRIMARY KEY ("run_id", "item_id", "classifier")
);
CREATE TABLE "rewrites" (
   "run_id" TEXT,
   "item_id" TEXT,
   "new_item_id" TEXT,
   "rewriter" TEXT,
   "round" INTEGER,
   "created_at" TEXT, "instruction" TEXT, "refined_instruction" TEXT, "error" TEXT,
   PRIMARY KEY ("run_id", "item_id", "rewriter", "round")
);
CREATE TABLE "checkpoints" (
   "id" INTEGER PRIMARY KEY,
   "run_id" TEXT,
   "round" INTEGER,
   "path" TEXT,
   "base_model" TEXT,
   "trainer" TEXT,
   "metrics" TEXT,
   "created_at" TEXT
);
CREATE UNIQUE INDEX "idx_checkpoints_run_id_round"
    ON "checkpoints" ("run_id", "round");
CREATE TABLE "scores" (
   "run_id" TEXT,
   "item_id" TEXT,
   "name" TEXT,
   "round" INTEGER,
   "value" REAL,
   PRIMARY KEY ("run_id", "item_id", "name", "round")
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
   "stage_key" TEXT,
   "item_id" TEXT,
   "status" TEXT,
   "reason" TEXT,
   "error_kind" TEXT,
   "http_status" INTEGER,
   "llm_call_id" INTEGER REFERENCES "llm_calls"("id"),
   "attempts" INTEGER,
   "updated_at" TEXT,
   PRIMARY KEY ("stage_key", "item_id")
);
CREATE INDEX "idx_outcomes_stage_key_status"
    ON "outcomes" ("stage_key", "status");
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
