-- 0001_jobs: the queue table, its invariants, the indexes the transitions need, and the
-- record type of a job description. Part of the baseline (0001-0004): the whole schema as
-- of the first release, each function defined once; later files are deltas on top of it.
--
-- One row per job. Statuses, and who moves jobs in and out of each:
--   waiting    in: pgq.enqueue with unfinished depends_on, pgq.retry of such a job.
--              out: the last parent succeeds (→ queued), a parent ends dead or cancelled
--              (→ dead), pgq.cancel (→ cancelled).
--   queued     in: pgq.enqueue, dependency release, pgq.fail / pgq.expire_leases with
--              attempts left (run_at pushed back by the backoff), pgq.retry, pgq.release.
--              out: pgq.claim once run_at has passed (→ running), pgq.cancel.
--   running    in: pgq.claim. out: pgq.complete / pgq.complete_many (→ succeeded),
--              pgq.fail and pgq.expire_leases (→ queued or dead), pgq.release (→ queued),
--              pgq.cancel (→ cancelled).
--   succeeded  terminal. in: pgq.complete, pgq.complete_many. out: only pgq.prune deletes it.
--   dead       terminal (the dead-letter state). in: pgq.fail / pgq.expire_leases with no
--              attempts left or a permanent error, a parent ending dead or cancelled.
--              out: pgq.retry (→ queued or waiting), pgq.prune.
--   cancelled  terminal. in: pgq.cancel. out: pgq.retry, pgq.prune.

CREATE TABLE pgq.jobs (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    queue            text        NOT NULL DEFAULT 'default',
    type             text        NOT NULL,
    args             jsonb       NOT NULL DEFAULT '{}',
    status           text        NOT NULL DEFAULT 'queued',
    priority         integer     NOT NULL DEFAULT 0,
    run_at           timestamptz NOT NULL DEFAULT now(),
    attempts         integer     NOT NULL DEFAULT 0,
    max_attempts     integer     NOT NULL DEFAULT 10,
    timeout_seconds  integer     NOT NULL DEFAULT 300,
    worker_id        text,
    claimed_at       timestamptz,
    lease_expires_at timestamptz,
    result           jsonb,
    last_error       jsonb,
    errors           jsonb       NOT NULL DEFAULT '[]',
    idempotency_key  text,
    depends_on       bigint[],
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz,
    concurrency_key  text,
    holds_slot       boolean     NOT NULL DEFAULT false,
    trace_context    jsonb,
    lease_token      uuid,

    -- text with a named CHECK rather than an enum: a value can be dropped later.
    CONSTRAINT jobs_status_known
        CHECK (status IN ('waiting', 'queued', 'running', 'succeeded', 'dead', 'cancelled')),
    -- Every UPDATE of a row re-checks every CHECK constraint, so the name checks use "+ or *,
    -- then length()" rather than bounded repetitions ({0,47}, {1,128}), which accept the
    -- same names but make PostgreSQL's regex engine build a large automaton at every
    -- match (~6 µs per updated row, claims and completions alike).
    CONSTRAINT jobs_queue_name CHECK (queue ~ '^[a-z][a-z0-9_]*$' AND length(queue) <= 48),
    CONSTRAINT jobs_type_name CHECK (type ~ '^[A-Za-z0-9_.:-]+$' AND length(type) <= 128),
    CONSTRAINT jobs_args_object CHECK (jsonb_typeof(args) = 'object'),
    CONSTRAINT jobs_priority_range CHECK (priority BETWEEN -32768 AND 32767),
    CONSTRAINT jobs_timeout_range CHECK (timeout_seconds BETWEEN 1 AND 86400),
    CONSTRAINT jobs_attempts_within_max CHECK (attempts >= 0 AND attempts <= max_attempts),
    -- a queued job can always be claimed once more: fail/expire only requeue with attempts left
    CONSTRAINT jobs_queued_has_attempt_left CHECK (status <> 'queued' OR attempts < max_attempts),
    -- a running job has a holder and a lease; nothing else has a lease
    CONSTRAINT jobs_running_is_held
        CHECK (status <> 'running' OR (worker_id IS NOT NULL AND claimed_at IS NOT NULL)),
    CONSTRAINT jobs_lease_iff_running CHECK ((status = 'running') = (lease_expires_at IS NOT NULL)),
    -- the lease token is a secret of one claim: it never outlives the lease
    CONSTRAINT jobs_lease_token_only_running CHECK (lease_token IS NULL OR status = 'running'),
    CONSTRAINT jobs_finished_iff_terminal
        CHECK ((status IN ('succeeded', 'dead', 'cancelled')) = (finished_at IS NOT NULL)),
    CONSTRAINT jobs_waiting_has_parents CHECK (status <> 'waiting' OR depends_on IS NOT NULL),
    CONSTRAINT jobs_errors_array CHECK (jsonb_typeof(errors) = 'array'),
    CONSTRAINT jobs_concurrency_key_length CHECK (length(concurrency_key) BETWEEN 1 AND 256)
)
-- Autovacuum for a queue table. Every claim and completion leaves a dead tuple version,
-- and a claimed job's entry stays in jobs_claim_idx, dead, at the head of the index (the
-- claim order) until VACUUM removes it: nothing else does, since no insert ever lands
-- there to trigger a page's bottom-up cleanup. After 300,000 claims without a vacuum, a
-- claim on an empty queue read 1,810 pages stepping over them. The defaults wait for 20 %
-- of the table to be dead (50,000 rows of a 250,000-row table) and then vacuum at a
-- throttled pace; here a vacuum starts after 1,000 + 1 % dead rows and runs unthrottled
-- (the table's hot pages are in shared buffers; the work is short and frequent).
-- Inserts count too (a bulk enqueue is followed by a vacuum, which also sets the
-- visibility map), and ANALYZE follows 1,000 + 2 % changed rows: statistics still
-- describing the empty table right after a bulk load of 20,000 jobs once made the
-- planner pick a hash join over a sequential scan of the whole table for a claim.
WITH (
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_insert_scale_factor = 0.01,
    autovacuum_vacuum_insert_threshold = 1000,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_analyze_threshold = 1000,
    autovacuum_vacuum_cost_delay = 0
);

COMMENT ON TABLE pgq.jobs IS
    'pgq job queue: one row per job. Change it through the pgq.* functions, not by hand.';

-- pgq.claim (through pgq._pick_due): the next claimable jobs of a queue in claim order
-- (priority, run_at, id), read one priority at a time (pgq._queued_priorities), so "queue,
-- priority, run_at <= now()" is a range of the index that is already in claim order. pgq.next_due reads the first entry
-- of each priority the same way. It is the only index on queued jobs: with a second one
-- (queue, run_at) for next_due, a claim on a table with stale statistics (a fresh bulk
-- load before autovacuum analyzed it) walked that one and sorted every queued job,
-- 26 ms for 40,000 jobs instead of 1; and each enqueue paid for both.
CREATE INDEX jobs_claim_idx ON pgq.jobs (queue, priority, run_at, id) WHERE status = 'queued';

-- the metrics' count of attempts retried in a scrape window: queued jobs that have run
-- before (a retry or an expired lease re-queues them with run_at = failure + backoff), by
-- run_at. Without it the planner's generic plan for that query read every queued row
-- (a whole-table scan at 1M rows, 300-600 ms per scrape). Only a retry adds an entry;
-- no claim can use it (a claim does not ask for attempts > 0).
CREATE INDEX jobs_retrying_idx ON pgq.jobs (run_at) WHERE status = 'queued' AND attempts > 0;

-- pgq.expire_leases and the runners' "earliest lease" look-up (and the lists of running jobs).
-- The fenced transitions (complete, complete_many, fail, heartbeat, release, progress)
-- must not use it: they write "running" as lease_expires_at IS NOT NULL (the same rows,
-- by jobs_lease_iff_running), which no partial index of running jobs matches, so each
-- job is found by its primary key. With status = 'running' in their WHERE, statistics
-- taken while few jobs ran (autovacuum's ANALYZE after a bulk enqueue) made this index
-- look empty, and each call, even one naming a single id, scanned it whole: 6,000 rows
-- read and dropped per call at 6,000 running jobs (tests/test_drain.py).
CREATE INDEX jobs_lease_idx ON pgq.jobs (lease_expires_at) WHERE status = 'running';

-- dependency release: a finishing job finds its waiting dependents without a table scan.
CREATE INDEX jobs_waiting_parents_idx ON pgq.jobs USING gin (depends_on) WHERE status = 'waiting';

-- idempotent enqueue; NULL keys are not indexed at all.
CREATE UNIQUE INDEX jobs_idempotency_key_idx ON pgq.jobs (idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- pgq.prune and retention (pgq.prune_expired): finished jobs of a status by age, oldest
-- first; the metrics' window of recently finished jobs (one range per status). A B-tree,
-- not BRIN: with retention deleting old rows, new versions land in the freed space, and
-- a BRIN range would soon span every age, so finding the expired rows would read the
-- whole table. Costs each finishing job one index entry (~2 µs); queued and running
-- jobs have none (finished_at is NULL).
CREATE INDEX jobs_finished_idx ON pgq.jobs (status, finished_at) WHERE finished_at IS NOT NULL;


-- pgq.stats: how the rows split over (queue, status), as a sample ANALYZE takes: the
-- estimated counts of finished jobs, which are not counted row by row once the table is
-- large (see pgq.stats).
CREATE STATISTICS pgq.jobs_queue_status (mcv) ON queue, status FROM pgq.jobs;

COMMENT ON COLUMN pgq.jobs.concurrency_key IS
    'jobs with one key share the key_concurrency limit of their queue (NULL: not limited by key)';
COMMENT ON COLUMN pgq.jobs.trace_context IS
    'the W3C trace context of the enqueue (e.g. {"traceparent": ..., "tracestate": ...}); '
    'runners run the job''s attempts in spans of that trace. NULL: none';
COMMENT ON COLUMN pgq.jobs.lease_token IS
    'secret of the current claim, minted fresh by every claim and cleared when the job leaves '
    'running; pgq.complete, fail, heartbeat, release and progress refuse a token that does not '
    'match';
COMMENT ON COLUMN pgq.jobs.holds_slot IS
    'internal: claimed while the queue had a concurrency or key limit; a running job with it '
    'occupies a slot, and leaving running notifies pgq_<queue>';

-- The running count of a limited queue (and of each key), read by every limited claim.
-- Partial on holds_slot: claims from unlimited queues add no entry here.
CREATE INDEX jobs_slots_idx ON pgq.jobs (queue, concurrency_key)
    WHERE status = 'running' AND holds_slot;


-- queues: flow control. One row per queue that has settings (pgq.pause, pgq.resume,
-- pgq.set_limits); a queue without a row is unpaused and unlimited. pgq.claim honours
-- them; tokens / tokens_at hold the token bucket of a queue with a rate.
CREATE TABLE pgq.queues (
    queue           text        PRIMARY KEY,
    paused          boolean     NOT NULL DEFAULT false,
    concurrency     integer,
    key_concurrency integer,
    rate            numeric,
    burst           integer,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    tokens          double precision,
    tokens_at       timestamptz,

    CONSTRAINT queues_queue_name CHECK (queue ~ '^[a-z][a-z0-9_]*$' AND length(queue) <= 48),
    CONSTRAINT queues_concurrency_positive CHECK (concurrency > 0),
    CONSTRAINT queues_key_concurrency_positive CHECK (key_concurrency > 0),
    CONSTRAINT queues_rate_positive CHECK (rate > 0),
    -- a rate always has its burst and its bucket; nothing else has either
    CONSTRAINT queues_bucket_iff_rate CHECK (
        (rate IS NULL) = (burst IS NULL) AND (rate IS NULL) = (tokens IS NULL)
        AND (rate IS NULL) = (tokens_at IS NULL)),
    CONSTRAINT queues_burst_positive CHECK (burst > 0)
);

COMMENT ON TABLE pgq.queues IS
    'pgq flow control: one row per queue with settings (pause, limits); change it through '
    'pgq.pause, pgq.resume and pgq.set_limits. A queue without a row is unpaused and unlimited.';
COMMENT ON COLUMN pgq.queues.tokens IS
    'token bucket of the rate limit: tokens left at tokens_at (refilled at rate per second up to burst)';


-- retention: how long finished jobs of each status are kept before runners and
-- coordinators delete them (pgq.prune_expired); keep NULL = forever. Changed through
-- pgq.set_retention.
CREATE TABLE pgq.retention (
    status     text        PRIMARY KEY,
    keep       interval,
    updated_at timestamptz NOT NULL DEFAULT now(),

    CONSTRAINT retention_status_finished CHECK (status IN ('succeeded', 'dead', 'cancelled')),
    CONSTRAINT retention_keep_non_negative CHECK (keep >= interval '0')
);
INSERT INTO pgq.retention (status, keep)
VALUES ('succeeded', interval '7 days'), ('cancelled', interval '7 days'), ('dead', interval '30 days');

COMMENT ON TABLE pgq.retention IS
    'pgq retention: how long finished jobs of each status are kept (NULL: forever); change it '
    'through pgq.set_retention.';

-- job_spec: one element of pgq.enqueue_many's input, as a typed record.
CREATE TYPE pgq.job_spec AS (
    type text, args jsonb, queue text, priority integer, run_at timestamptz,
    max_attempts integer, timeout_seconds integer, idempotency_key text, depends_on bigint[],
    delay_seconds double precision, concurrency_key text, trace_context jsonb
);
