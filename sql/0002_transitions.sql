-- 0002_transitions: one function per state transition, plus the helpers they share.
-- Part of the baseline (0001-0004).
--
-- Every refusal raises a custom SQLSTATE (pgq/errors.py maps them, HTTP answers with them):
--   PQ400  invalid argument          → HTTP 400
--   PQ404  no such job               → HTTP 404
--   PQ409  transition not allowed: wrong status, another holder, a stale attempt → HTTP 409
-- and dependency bookkeeping raises 0A000 inside a REPEATABLE READ transaction (see
-- pgq._require_fresh_snapshots). Functions run in the caller's transaction: a refusal rolls
-- back everything it did. Notifications are sent by the triggers and helpers of
-- 0003_notifications; the runners' batched acknowledgement is in 0004_runner.


-- _invalid_job: why a job description would be refused, or NULL when it is acceptable.
-- Applies to one job description; shared by pgq.enqueue, pgq.enqueue_many and
-- pgq.enqueue_bulk so all give the same message for the same mistake. The rules are those
-- of pgq.jobs' constraints, plus max_attempts <= 1000. Leaves nothing behind; raises nothing.
-- STABLE (format() is stable), so the planner inlines it into the calling query instead of
-- calling it once per job; the name patterns use "+ and length()" rather than bounded
-- repetitions, as the table's CHECKs do, for the same cost reason.
CREATE FUNCTION pgq._invalid_job(
    job_type text, args jsonb, queue text, priority integer, run_at timestamptz,
    max_attempts integer, timeout_seconds integer
) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN job_type IS NULL THEN 'job type is required'
        WHEN job_type !~ '^[A-Za-z0-9_.:-]+$' OR length(job_type) > 128 THEN
            format('job type %s is invalid: use 1-128 characters of A-Z a-z 0-9 _ . : -',
                   quote_literal(left(job_type, 140)))
        WHEN queue IS NULL OR queue !~ '^[a-z][a-z0-9_]*$' OR length(queue) > 48 THEN
            format('queue %s is invalid: use a lowercase letter then up to 47 of a-z 0-9 _',
                   coalesce(quote_literal(left(queue, 60)), 'NULL'))
        WHEN args IS NULL OR jsonb_typeof(args) <> 'object' THEN
            format('args must be a JSON object, not %s', coalesce(jsonb_typeof(args), 'NULL'))
        WHEN priority IS NULL OR priority NOT BETWEEN -32768 AND 32767 THEN
            format('priority %s is out of range -32768..32767', coalesce(priority::text, 'NULL'))
        WHEN run_at IS NULL THEN 'run_at must not be NULL'
        WHEN max_attempts IS NULL OR max_attempts NOT BETWEEN 1 AND 1000 THEN
            format('max_attempts %s is out of range 1..1000', coalesce(max_attempts::text, 'NULL'))
        WHEN timeout_seconds IS NULL OR timeout_seconds NOT BETWEEN 1 AND 86400 THEN
            format('timeout_seconds %s is out of range 1..86400',
                   coalesce(timeout_seconds::text, 'NULL'))
    END
$$;
COMMENT ON FUNCTION pgq._invalid_job(text, jsonb, text, integer, timestamp with time zone, integer, integer) IS $$_invalid_job: why a job description would be refused, or NULL when it is acceptable.
Applies to one job description; shared by pgq.enqueue, pgq.enqueue_many and
pgq.enqueue_bulk so all give the same message for the same mistake. The rules are those
of pgq.jobs' constraints, plus max_attempts <= 1000. Leaves nothing behind; raises nothing.
STABLE (format() is stable), so the planner inlines it into the calling query instead of
calling it once per job; the name patterns use "+ and length()" rather than bounded
repetitions, as the table's CHECKs do, for the same cost reason.$$;

-- _invalid_key: why a concurrency_key would be refused (NULL when it is acceptable: NULL,
-- or 1-256 characters). Shared by enqueue_bulk and enqueue_many, which name the element.
CREATE FUNCTION pgq._invalid_key(concurrency_key text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN length(concurrency_key) NOT BETWEEN 1 AND 256
                THEN 'concurrency_key must be 1-256 characters' END
$$;
COMMENT ON FUNCTION pgq._invalid_key(text) IS $$_invalid_key: why a concurrency_key would be refused (NULL when it is acceptable: NULL,
or 1-256 characters). Shared by enqueue_bulk and enqueue_many, which name the element.$$;

-- _invalid_trace_context: why a trace_context would be refused (NULL when it is acceptable:
-- NULL, or a JSON object of at most 4096 bytes, such as {"traceparent": "00-…"}). Shared by
-- enqueue and enqueue_bulk.
CREATE FUNCTION pgq._invalid_trace_context(trace_context jsonb) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN jsonb_typeof(trace_context) <> 'object'
                THEN 'trace_context must be a JSON object'
                WHEN octet_length(trace_context::text) > 4096
                THEN 'trace_context must be at most 4096 bytes' END
$$;
COMMENT ON FUNCTION pgq._invalid_trace_context(jsonb) IS $$_invalid_trace_context: why a trace_context would be refused (NULL when it is acceptable:
NULL, or a JSON object of at most 4096 bytes, such as {"traceparent": "00-…"}). Shared by
enqueue and enqueue_bulk.$$;

-- backoff: how long a job waits after failed attempt n before it runs again: a base drawn
-- uniformly from 4-8 s, doubled per attempt, capped at one hour:
-- min(3600, uniform(4, 8) * 2^(n-1)) seconds. Used by pgq.fail and pgq.expire_leases.
-- Leaves nothing behind; raises nothing.
CREATE FUNCTION pgq.backoff(attempt integer) RETURNS interval
LANGUAGE sql VOLATILE AS $$
    SELECT make_interval(secs => least(3600, (4 + random() * 4) * 2 ^ least(greatest(attempt, 1) - 1, 20)))
$$;
COMMENT ON FUNCTION pgq.backoff(integer) IS $$backoff: how long a job waits after failed attempt n before it runs again: a base drawn
uniformly from 4-8 s, doubled per attempt, capped at one hour:
min(3600, uniform(4, 8) * 2^(n-1)) seconds. Used by pgq.fail and pgq.expire_leases.
Leaves nothing behind; raises nothing.$$;

-- _queued_queues: the queues that have queued jobs (what "every queue" means to pgq.claim
-- and pgq.next_due), found by hopping through jobs_claim_idx one queue at a time, a skip
-- scan whose cost grows with the number of queues, not with the number of jobs. Each hop
-- is an ordered LIMIT 1, not min(): a min() can also be planned as an aggregate over every
-- queued row read through jobs_list_status_idx, which the planner did when the statistics
-- said queued jobs were rare (analyzed before a bulk load of 30,000: each claim read them all);
-- an ordered LIMIT 1 has no plan but jobs_claim_idx without a sort, and pgq.claim rules
-- sorts out (enable_sort = off).
-- Leaves nothing behind; raises nothing.
CREATE FUNCTION pgq._queued_queues() RETURNS SETOF text
LANGUAGE sql STABLE AS $$
    WITH RECURSIVE hop AS (
        SELECT (SELECT j.queue FROM pgq.jobs AS j
                 WHERE j.status = 'queued'
                 ORDER BY j.queue LIMIT 1) AS queue
        UNION ALL
        SELECT (SELECT j.queue FROM pgq.jobs AS j
                 WHERE j.status = 'queued' AND j.queue > hop.queue
                 ORDER BY j.queue LIMIT 1)
          FROM hop
         WHERE hop.queue IS NOT NULL
    )
    SELECT hop.queue FROM hop WHERE hop.queue IS NOT NULL
$$;
COMMENT ON FUNCTION pgq._queued_queues() IS $$_queued_queues: the queues that have queued jobs (what "every queue" means to pgq.claim
and pgq.next_due), found by hopping through jobs_claim_idx one queue at a time, a skip
scan whose cost grows with the number of queues, not with the number of jobs. Each hop
is an ordered LIMIT 1, not min(): a min() can also be planned as an aggregate over every
queued row read through jobs_list_status_idx, which the planner did when the statistics
said queued jobs were rare (analyzed before a bulk load of 30,000: each claim read them all);
an ordered LIMIT 1 has no plan but jobs_claim_idx without a sort, and pgq.claim rules
sorts out (enable_sort = off).
Leaves nothing behind; raises nothing.$$;

-- _queued_priorities: the priorities that a queue's queued jobs have, in ascending order,
-- each with the claim-order key (run_at, id) of its first queued job, found by hopping
-- through jobs_claim_idx one priority at a time (like _queued_queues). pgq._pick_due
-- (pgq.claim's walk) and pgq.next_due walk the queue one priority at a time with it, so
-- each walk is a range of jobs_claim_idx in claim order, whatever the planner's
-- statistics say; the hop is lazy, so a claim filled from the first priority reads no
-- other. Each hop is an ordered LIMIT 1, as in _queued_queues. The key lets a walk start
-- at the first queued job instead of stepping again over the index entries the hop
-- already stepped over: the entries of jobs that left queued stay in jobs_claim_idx, at
-- the head of their priority, until VACUUM (after one UPDATE turned 9,990,000 of 10M jobs
-- succeeded, each of the two walks read 83,770 pages of the index).
-- Leaves nothing behind; raises nothing.
CREATE FUNCTION pgq._queued_priorities(queue text)
RETURNS TABLE (priority integer, run_at timestamptz, id bigint)
LANGUAGE sql STABLE AS $$
    WITH RECURSIVE hop AS (
        (SELECT j.priority, j.run_at, j.id FROM pgq.jobs AS j
          WHERE j.status = 'queued' AND j.queue = _queued_priorities.queue
          ORDER BY j.priority, j.run_at, j.id LIMIT 1)
        UNION ALL
        SELECT n.priority, n.run_at, n.id
          FROM hop
         CROSS JOIN LATERAL (
               SELECT j.priority, j.run_at, j.id FROM pgq.jobs AS j
                WHERE j.status = 'queued' AND j.queue = _queued_priorities.queue
                  AND j.priority > hop.priority
                ORDER BY j.priority, j.run_at, j.id LIMIT 1) AS n
    )
    SELECT hop.priority, hop.run_at, hop.id FROM hop
$$;
COMMENT ON FUNCTION pgq._queued_priorities(text) IS $$_queued_priorities: the priorities that a queue's queued jobs have, in ascending order,
each with the claim-order key (run_at, id) of its first queued job, found by hopping
through jobs_claim_idx one priority at a time (like _queued_queues). pgq._pick_due
(pgq.claim's walk) and pgq.next_due walk the queue one priority at a time with it, so
each walk is a range of jobs_claim_idx in claim order, whatever the planner's
statistics say; the hop is lazy, so a claim filled from the first priority reads no
other. Each hop is an ordered LIMIT 1, as in _queued_queues. The key lets a walk start
at the first queued job instead of stepping again over the index entries the hop
already stepped over: the entries of jobs that left queued stay in jobs_claim_idx, at
the head of their priority, until VACUUM (after one UPDATE turned 9,990,000 of 10M jobs
succeeded, each of the two walks read 83,770 pages of the index).
Leaves nothing behind; raises nothing.$$;

-- _cut_error: an error object whose JSON is over 16 KiB, cut down to at most 16 KiB: its
-- message (or, without a string message, its JSON text) shortened, its kind kept, and
-- "truncated_from_bytes": the size it had. Leaves nothing behind; raises nothing.
CREATE FUNCTION pgq._cut_error(error jsonb) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    full_text text := error::text;
    cut text := coalesce(CASE WHEN jsonb_typeof(error -> 'message') = 'string'
                              THEN error ->> 'message' END, full_text);
BEGIN
    cut := left(cut, 15000);
    -- escapes (\n, \u0001) can make the JSON of a string several times its length
    WHILE octet_length(to_jsonb(cut)::text) > 15000 LOOP
        cut := left(cut, length(cut) / 2);
    END LOOP;
    RETURN jsonb_build_object('message', cut, 'truncated_from_bytes', octet_length(full_text))
           || CASE WHEN jsonb_typeof(error -> 'kind') = 'string' AND length(error ->> 'kind') <= 64
                   THEN jsonb_build_object('kind', error -> 'kind') ELSE '{}' END;
END
$$;
COMMENT ON FUNCTION pgq._cut_error(jsonb) IS $$_cut_error: an error object whose JSON is over 16 KiB, cut down to at most 16 KiB: its
message (or, without a string message, its JSON text) shortened, its kind kept, and
"truncated_from_bytes": the size it had. Leaves nothing behind; raises nothing.$$;

-- _error_entry: the error of one attempt as stored in last_error and appended to errors.
-- An object is kept as given, anything else becomes {"message": ...}; one whose JSON is over
-- 16 KiB is cut (_cut_error); attempt and time are added. Leaves nothing behind; raises
-- nothing.
CREATE FUNCTION pgq._error_entry(error jsonb, attempt integer) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN octet_length(e::text) > 16000 THEN pgq._cut_error(e) ELSE e END
           || jsonb_build_object('attempt', attempt, 'at', now())
      FROM (SELECT CASE
                       WHEN jsonb_typeof(error) = 'object' THEN error
                       WHEN error IS NULL OR jsonb_typeof(error) = 'null'
                           THEN '{"message": "failed"}'::jsonb
                       ELSE jsonb_build_object('message', error #>> '{}')
                   END AS e) AS given
$$;
COMMENT ON FUNCTION pgq._error_entry(jsonb, integer) IS $$_error_entry: the error of one attempt as stored in last_error and appended to errors.
An object is kept as given, anything else becomes {"message": ...}; one whose JSON is over
16 KiB is cut (_cut_error); attempt and time are added. Leaves nothing behind; raises
nothing.$$;

-- _append_error: errors (a job's error history) with entry appended, keeping the last 20:
-- older entries are dropped, and an oversized history is never built first (a history
-- stored before the cap cannot make the append fail). Leaves nothing behind; raises nothing.
CREATE FUNCTION pgq._append_error(errors jsonb, entry jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
               WHEN jsonb_array_length(errors) < 20 THEN errors || jsonb_build_array(entry)
               ELSE coalesce((SELECT jsonb_agg(x.e ORDER BY x.i)
                                FROM jsonb_array_elements(errors) WITH ORDINALITY AS x(e, i)
                               WHERE x.i > jsonb_array_length(errors) - 19), '[]'::jsonb)
                    || jsonb_build_array(entry)
           END
$$;
COMMENT ON FUNCTION pgq._append_error(jsonb, jsonb) IS $$_append_error: errors (a job's error history) with entry appended, keeping the last 20:
older entries are dropped, and an oversized history is never built first (a history
stored before the cap cannot make the append fail). Leaves nothing behind; raises nothing.$$;

-- _refuse: raise the right exception for a fenced transition (complete, fail, heartbeat,
-- release, progress) whose UPDATE matched nothing. Always raises: PQ404 when the job does
-- not exist; PQ419 (a kind of PQ409: the lease is not held) when a lease_token was given
-- and is not the job's current one; else PQ409 when it is not running, not held by
-- worker_id or on another attempt. Messages never name the holder nor show a token.
CREATE FUNCTION pgq._refuse(job_id bigint, worker_id text, attempt integer, action text,
                            lease_token uuid DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    j pgq.jobs;
BEGIN
    SELECT * INTO j FROM pgq.jobs WHERE id = job_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'job % does not exist', job_id
            USING ERRCODE = 'PQ404', HINT = 'It may never have existed or been pruned.';
    ELSIF _refuse.lease_token IS NOT NULL AND j.lease_token IS DISTINCT FROM _refuse.lease_token THEN
        RAISE EXCEPTION 'cannot %: the lease of job % is not held (status %)', action, job_id, j.status
            USING ERRCODE = 'PQ419',
                  HINT = 'The lease token is wrong, or stale: the lease expired, or the job '
                         'was finished, cancelled or claimed again.';
    ELSIF j.status <> 'running' THEN
        RAISE EXCEPTION 'cannot %: job % is not running (status %)', action, job_id, j.status
            USING ERRCODE = 'PQ409';
    ELSIF j.worker_id IS DISTINCT FROM _refuse.worker_id THEN
        RAISE EXCEPTION 'cannot %: job % is not held by worker %',
                        action, job_id, quote_literal(_refuse.worker_id)
            USING ERRCODE = 'PQ409',
                  HINT = 'The lease may have expired and the job been claimed again.';
    ELSE
        RAISE EXCEPTION 'cannot %: job % is on attempt %, not attempt %',
                        action, job_id, j.attempts, attempt
            USING ERRCODE = 'PQ409',
                  HINT = 'The lease of that attempt expired and the job was claimed again.';
    END IF;
END
$$;
COMMENT ON FUNCTION pgq._refuse(bigint, text, integer, text, uuid) IS $$_refuse: raise the right exception for a fenced transition (complete, fail, heartbeat,
release, progress) whose UPDATE matched nothing. Always raises: PQ404 when the job does
not exist; PQ419 (a kind of PQ409: the lease is not held) when a lease_token was given
and is not the job's current one; else PQ409 when it is not running, not held by
worker_id or on another attempt. Messages never name the holder nor show a token.$$;

-- _require_fresh_snapshots: refuse dependency bookkeeping in a REPEATABLE READ transaction.
-- Ending a job and enqueueing its dependent, or two parents ending, race; each side waits
-- for the other's row lock and then re-reads in a new statement. That works under READ
-- COMMITTED (each statement takes a fresh snapshot) and fails safely under SERIALIZABLE
-- (a serialization error to retry), but under REPEATABLE READ the re-read sees the old
-- snapshot: a dependent enqueued meanwhile is not found, or the other parent still looks
-- unfinished, and the dependent would wait forever. Leaves nothing behind; raises 0A000
-- under REPEATABLE READ.
CREATE FUNCTION pgq._require_fresh_snapshots(action text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('transaction_isolation') = 'repeatable read' THEN
        RAISE EXCEPTION 'cannot % in a REPEATABLE READ transaction: job dependencies '
                        'need READ COMMITTED or SERIALIZABLE', action
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'Run it in its own transaction, or at READ COMMITTED (the default).';
    END IF;
END
$$;
COMMENT ON FUNCTION pgq._require_fresh_snapshots(text) IS $$_require_fresh_snapshots: refuse dependency bookkeeping in a REPEATABLE READ transaction.
Ending a job and enqueueing its dependent, or two parents ending, race; each side waits
for the other's row lock and then re-reads in a new statement. That works under READ
COMMITTED (each statement takes a fresh snapshot) and fails safely under SERIALIZABLE
(a serialization error to retry), but under REPEATABLE READ the re-read sees the old
snapshot: a dependent enqueued meanwhile is not found, or the other parent still looks
unfinished, and the dependent would wait forever. Leaves nothing behind; raises 0A000
under REPEATABLE READ.$$;

-- _release_dependents: after a job succeeded (pgq.complete), queue each waiting dependent
-- whose parents have now all succeeded. Leaves the others waiting. Raises 0A000 in a
-- REPEATABLE READ transaction (see _require_fresh_snapshots).
CREATE FUNCTION pgq._release_dependents(parent_id bigint) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pgq._require_fresh_snapshots(format('settle the dependents of job %s', parent_id));
    -- Lock first, check in a second statement: under READ COMMITTED the second statement
    -- takes a fresh snapshot, so two parents finishing at once cannot both miss each other.
    PERFORM 1 FROM pgq.jobs
     WHERE depends_on @> ARRAY[parent_id] AND status = 'waiting'
     ORDER BY id
       FOR UPDATE;

    UPDATE pgq.jobs AS child
       SET status = 'queued', updated_at = now()
     WHERE child.depends_on @> ARRAY[parent_id]
       AND child.status = 'waiting'
       AND NOT EXISTS (SELECT 1 FROM pgq.jobs AS p
                        WHERE p.id = ANY (child.depends_on) AND p.status <> 'succeeded');
END
$$;
COMMENT ON FUNCTION pgq._release_dependents(bigint) IS $$_release_dependents: after a job succeeded (pgq.complete), queue each waiting dependent
whose parents have now all succeeded. Leaves the others waiting. Raises 0A000 in a
REPEATABLE READ transaction (see _require_fresh_snapshots).$$;

-- _doom_dependents: after jobs ended dead or cancelled, every job waiting on them (and,
-- transitively, on those) becomes dead with a "dependency" error, finished_at set and a
-- pgq_events notification. Raises 0A000 in a REPEATABLE READ transaction (see
-- _require_fresh_snapshots).
CREATE FUNCTION pgq._doom_dependents(parent_ids bigint[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    doomed bigint[] := parent_ids;
BEGIN
    PERFORM pgq._require_fresh_snapshots(
        format('settle the dependents of job %s', array_to_string(parent_ids, ', ')));
    WHILE cardinality(doomed) > 0 LOOP
        WITH victims AS (
            SELECT v.id,
                   pgq._error_entry(jsonb_build_object(
                       'message', format('a job it depends on (%s) ended dead or cancelled',
                                         array_to_string(ARRAY(SELECT unnest(v.depends_on)
                                                               INTERSECT SELECT unnest(doomed)), ', ')),
                       'kind', 'dependency'), v.attempts) AS entry
              FROM pgq.jobs AS v
             WHERE v.depends_on && doomed AND v.status = 'waiting'
             ORDER BY v.id
               FOR UPDATE
        ), updated AS (
            UPDATE pgq.jobs AS j
               SET status = 'dead', finished_at = now(), updated_at = now(),
                   last_error = victims.entry, errors = pgq._append_error(j.errors, victims.entry)
              FROM victims
             WHERE j.id = victims.id
            RETURNING j.id
        )
        SELECT coalesce(array_agg(id), '{}') INTO doomed FROM updated;
    END LOOP;
END
$$;
COMMENT ON FUNCTION pgq._doom_dependents(bigint[]) IS $$_doom_dependents: after jobs ended dead or cancelled, every job waiting on them (and,
transitively, on those) becomes dead with a "dependency" error, finished_at set and a
pgq_events notification. Raises 0A000 in a REPEATABLE READ transaction (see
_require_fresh_snapshots).$$;

-- enqueue: → queued (or waiting, or dead when a parent already failed).
-- Applies always, given valid arguments. Leaves a new job, or for a known idempotency_key
-- the existing job untouched (when it has the same type and queue; a key is never another
-- producer's job). With depends_on the job waits until every parent succeeded;
-- when a parent is already dead or cancelled the job is created dead. concurrency_key (NULL,
-- or 1-256 characters) puts the job under its queue's key_concurrency limit. trace_context
-- (NULL, or a JSON object such as {"traceparent": …}) is the W3C trace context that the
-- job's runners continue. Returns the job.
-- Raises PQ400 for an invalid argument or a depends_on naming a job that does not exist,
-- PQ409 for an idempotency_key already taken by a job of another type or queue, and 0A000
-- for depends_on inside a REPEATABLE READ transaction (_require_fresh_snapshots).
CREATE FUNCTION pgq.enqueue(
    job_type text,
    args jsonb DEFAULT '{}',
    queue text DEFAULT 'default',
    priority integer DEFAULT 0,
    run_at timestamptz DEFAULT now(),
    max_attempts integer DEFAULT 10,
    timeout_seconds integer DEFAULT 300,
    idempotency_key text DEFAULT NULL,
    depends_on bigint[] DEFAULT NULL,
    concurrency_key text DEFAULT NULL,
    trace_context jsonb DEFAULT NULL
) RETURNS pgq.jobs
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    problem text := pgq._invalid_job(job_type, args, queue, priority, run_at, max_attempts,
                                     timeout_seconds);
    parents bigint[];
    found_parents bigint[];
    unfinished integer := 0;
    failed_parents bigint[];
    new_status text := 'queued';
    failure jsonb;
    j pgq.jobs;
BEGIN
    IF problem IS NOT NULL THEN
        RAISE EXCEPTION 'cannot enqueue: %', problem USING ERRCODE = 'PQ400';
    END IF;
    IF idempotency_key IS NOT NULL AND length(idempotency_key) NOT BETWEEN 1 AND 255 THEN
        RAISE EXCEPTION 'cannot enqueue: idempotency_key must be 1-255 characters'
            USING ERRCODE = 'PQ400';
    END IF;
    IF concurrency_key IS NOT NULL AND length(concurrency_key) NOT BETWEEN 1 AND 256 THEN
        RAISE EXCEPTION 'cannot enqueue: concurrency_key must be 1-256 characters'
            USING ERRCODE = 'PQ400';
    END IF;
    IF trace_context IS NOT NULL THEN
        problem := pgq._invalid_trace_context(trace_context);
        IF problem IS NOT NULL THEN
            RAISE EXCEPTION 'cannot enqueue: %', problem USING ERRCODE = 'PQ400';
        END IF;
    END IF;

    IF depends_on IS NOT NULL AND cardinality(depends_on) > 0 THEN
        IF array_position(depends_on, NULL) IS NOT NULL THEN
            RAISE EXCEPTION 'cannot enqueue: depends_on must not contain NULL' USING ERRCODE = 'PQ400';
        END IF;
        parents := ARRAY(SELECT DISTINCT unnest(depends_on) ORDER BY 1);
        IF cardinality(parents) > 1000 THEN
            RAISE EXCEPTION 'cannot enqueue: depends_on names % jobs, at most 1000 are allowed',
                            cardinality(parents) USING ERRCODE = 'PQ400';
        END IF;
        -- FOR SHARE: a parent finishing right now either commits first (we see its status)
        -- or waits for us (and then finds this job among its dependents).
        PERFORM pgq._require_fresh_snapshots('enqueue a job with depends_on');
        SELECT array_agg(p.id),
               count(*) FILTER (WHERE p.status <> 'succeeded'),
               array_agg(p.id) FILTER (WHERE p.status IN ('dead', 'cancelled'))
          INTO found_parents, unfinished, failed_parents
          FROM (SELECT id, status FROM pgq.jobs WHERE id = ANY (parents) ORDER BY id FOR SHARE) AS p;
        IF coalesce(cardinality(found_parents), 0) < cardinality(parents) THEN
            RAISE EXCEPTION 'cannot enqueue: depends_on names jobs that do not exist: %',
                            array_to_string(ARRAY(SELECT unnest(parents)
                                                  EXCEPT SELECT unnest(found_parents)), ', ')
                USING ERRCODE = 'PQ400';
        END IF;
        IF failed_parents IS NOT NULL THEN
            new_status := 'dead';
            failure := pgq._error_entry(jsonb_build_object(
                'message', format('a job it depends on (%s) ended dead or cancelled',
                                  array_to_string(failed_parents, ', ')),
                'kind', 'dependency'), 0);
        ELSIF unfinished > 0 THEN
            new_status := 'waiting';
        END IF;
    ELSE
        parents := NULL;
    END IF;

    INSERT INTO pgq.jobs AS t (type, args, queue, priority, run_at, max_attempts, timeout_seconds,
                               idempotency_key, depends_on, concurrency_key, trace_context,
                               status, finished_at, last_error, errors)
    VALUES (job_type, args, queue, priority, run_at, max_attempts, timeout_seconds,
            idempotency_key, parents, concurrency_key, trace_context, new_status,
            CASE WHEN new_status = 'dead' THEN now() END,
            failure, CASE WHEN failure IS NULL THEN '[]'::jsonb ELSE jsonb_build_array(failure) END)
    ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING * INTO j;

    IF NOT FOUND THEN
        -- a job with this key exists (possibly committed by a concurrent enqueue just now,
        -- which this new statement's snapshot sees)
        SELECT * INTO j FROM pgq.jobs AS t WHERE t.idempotency_key = enqueue.idempotency_key;
        IF j.type <> job_type OR j.queue <> enqueue.queue THEN
            -- not that job: never hand a producer another one's job (nor say what it holds)
            RAISE EXCEPTION 'cannot enqueue: idempotency_key % is already taken by a job of '
                            'another type or queue', quote_literal(enqueue.idempotency_key)
                USING ERRCODE = 'PQ409',
                      HINT = 'Keys are unique across pgq: make them name what they protect, '
                             'e.g. prefix them with the job type.';
        END IF;
    END IF;
    RETURN j;
END
$$;
COMMENT ON FUNCTION pgq.enqueue(text, jsonb, text, integer, timestamp with time zone, integer, integer, text, bigint[], text, jsonb) IS $$enqueue: → queued (or waiting, or dead when a parent already failed).
Applies always, given valid arguments. Leaves a new job, or for a known idempotency_key
the existing job untouched (when it has the same type and queue; a key is never another
producer's job). With depends_on the job waits until every parent succeeded;
when a parent is already dead or cancelled the job is created dead. concurrency_key (NULL,
or 1-256 characters) puts the job under its queue's key_concurrency limit. trace_context
(NULL, or a JSON object such as {"traceparent": …}) is the W3C trace context that the
job's runners continue. Returns the job.
Raises PQ400 for an invalid argument or a depends_on naming a job that does not exist,
PQ409 for an idempotency_key already taken by a job of another type or queue, and 0A000
for depends_on inside a REPEATABLE READ transaction (_require_fresh_snapshots).$$;

-- _job_spec: one element of pgq.enqueue_many's input as a job_spec, with the defaults of
-- pgq.enqueue filled in and delay_seconds turned into run_at on the database's clock.
-- Leaves nothing behind. Raises a data exception (SQLSTATE class 22) for a value of the
-- wrong type, such as "priority": "high"; pgq._name_unconvertible_job turns that into PQ400
-- naming the element.
CREATE FUNCTION pgq._job_spec(job jsonb) RETURNS pgq.job_spec
LANGUAGE sql STABLE AS $$
    SELECT ROW(r.type, coalesce(r.args, '{}'), coalesce(r.queue, 'default'),
               coalesce(r.priority, 0),
               coalesce(r.run_at, now() + make_interval(secs => coalesce(r.delay_seconds, 0))),
               coalesce(r.max_attempts, 10), coalesce(r.timeout_seconds, 300),
               r.idempotency_key, r.depends_on, NULL, r.concurrency_key,
               r.trace_context)::pgq.job_spec
      FROM jsonb_populate_record(NULL::pgq.job_spec, job) AS r
$$;
COMMENT ON FUNCTION pgq._job_spec(jsonb) IS $$_job_spec: one element of pgq.enqueue_many's input as a job_spec, with the defaults of
pgq.enqueue filled in and delay_seconds turned into run_at on the database's clock.
Leaves nothing behind. Raises a data exception (SQLSTATE class 22) for a value of the
wrong type, such as "priority": "high"; pgq._name_unconvertible_job turns that into PQ400
naming the element.$$;

-- _check_job_array: refuse a pgq.enqueue_many / pgq.enqueue_bulk input that is not a JSON
-- array of objects with known keys, at most one of run_at and delay_seconds, and a
-- non-negative delay_seconds. Values of the wrong type are left to the conversion
-- (_job_rows), the rules on values to _invalid_job. Leaves nothing behind; raises PQ400
-- naming the first bad element (jobs[i], counting from 0).
CREATE FUNCTION pgq._check_job_array(jobs jsonb) RETURNS void
LANGUAGE plpgsql STABLE AS $$
DECLARE
    bad_idx bigint;
BEGIN
    IF jobs IS NULL OR jsonb_typeof(jobs) <> 'array' THEN
        RAISE EXCEPTION 'cannot enqueue: jobs must be a JSON array' USING ERRCODE = 'PQ400';
    END IF;
    SELECT e.ord - 1 INTO bad_idx
      FROM jsonb_array_elements(jobs) WITH ORDINALITY AS e(value, ord)
     WHERE CASE WHEN jsonb_typeof(e.value) <> 'object' THEN true  -- CASE: keys only of objects
                ELSE e.value - '{type, args, queue, priority, run_at, delay_seconds, max_attempts,
                                 timeout_seconds, idempotency_key, depends_on,
                                 concurrency_key, trace_context}'::text[] <> '{}'
                     OR (e.value ? 'run_at' AND e.value ? 'delay_seconds')
                     OR CASE WHEN jsonb_typeof(e.value->'delay_seconds') = 'number'  -- else: _job_rows
                             THEN (e.value->>'delay_seconds')::double precision < 0 END
           END
     ORDER BY e.ord LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'cannot enqueue jobs[%]: each job must be an object with known keys (type, args, queue, priority, run_at or a non-negative delay_seconds, max_attempts, timeout_seconds, idempotency_key, depends_on, concurrency_key, trace_context)',
                        bad_idx USING ERRCODE = 'PQ400';
    END IF;
END
$$;
COMMENT ON FUNCTION pgq._check_job_array(jsonb) IS $$_check_job_array: refuse a pgq.enqueue_many / pgq.enqueue_bulk input that is not a JSON
array of objects with known keys, at most one of run_at and delay_seconds, and a
non-negative delay_seconds. Values of the wrong type are left to the conversion
(_job_rows), the rules on values to _invalid_job. Leaves nothing behind; raises PQ400
naming the first bad element (jobs[i], counting from 0).$$;

-- _job_rows: the elements of a job array as typed rows, in input order (ord counts from 1),
-- with the defaults of pgq.enqueue filled in and delay_seconds turned into run_at on the
-- database's clock, as pgq._job_spec does for one element. A key that is absent or JSON
-- null takes the default. One jsonb_populate_recordset over the whole array rather than
-- one call per element; a SQL function the planner inlines into the caller's query.
-- Raises a data exception (SQLSTATE class 22) for a value of the wrong type; callers turn
-- it into PQ400 naming the element with pgq._name_unconvertible_job.
CREATE FUNCTION pgq._job_rows(jobs jsonb)
RETURNS TABLE (ord bigint, type text, args jsonb, queue text, priority integer,
               run_at timestamptz, max_attempts integer, timeout_seconds integer,
               idempotency_key text, depends_on bigint[], concurrency_key text,
               trace_context jsonb)
LANGUAGE sql STABLE AS $$
    SELECT r.ord, r.type, coalesce(r.args, '{}'), coalesce(r.queue, 'default'),
           coalesce(r.priority, 0),
           coalesce(r.run_at, now() + make_interval(secs => coalesce(r.delay_seconds, 0))),
           coalesce(r.max_attempts, 10), coalesce(r.timeout_seconds, 300),
           r.idempotency_key, r.depends_on, r.concurrency_key, r.trace_context
      FROM jsonb_populate_recordset(NULL::pgq.job_spec, jobs) WITH ORDINALITY
           AS r(type, args, queue, priority, run_at, max_attempts, timeout_seconds,
                idempotency_key, depends_on, delay_seconds, concurrency_key, trace_context,
                ord)
$$;
COMMENT ON FUNCTION pgq._job_rows(jsonb) IS $$_job_rows: the elements of a job array as typed rows, in input order (ord counts from 1),
with the defaults of pgq.enqueue filled in and delay_seconds turned into run_at on the
database's clock, as pgq._job_spec does for one element. A key that is absent or JSON
null takes the default. One jsonb_populate_recordset over the whole array rather than
one call per element; a SQL function the planner inlines into the caller's query.
Raises a data exception (SQLSTATE class 22) for a value of the wrong type; callers turn
it into PQ400 naming the element with pgq._name_unconvertible_job.$$;

-- _name_unconvertible_job: after _job_rows failed with a data exception, convert the
-- elements one by one and raise PQ400 naming the first that fails, with PostgreSQL's
-- message ("invalid input syntax for type integer: "high""). Returns normally when every
-- element converts on its own (the caller then re-raises the original error).
CREATE FUNCTION pgq._name_unconvertible_job(jobs jsonb) RETURNS void
LANGUAGE plpgsql STABLE AS $$
DECLARE
    element record;
    spec pgq.job_spec;
BEGIN
    FOR element IN SELECT e.ord - 1 AS idx, e.value
                     FROM jsonb_array_elements(jobs) WITH ORDINALITY AS e(value, ord)
                    ORDER BY e.ord LOOP
        BEGIN
            spec := pgq._job_spec(element.value);
        EXCEPTION WHEN data_exception THEN
            RAISE EXCEPTION 'cannot enqueue jobs[%]: %', element.idx, SQLERRM
                USING ERRCODE = 'PQ400';
        END;
    END LOOP;
END
$$;
COMMENT ON FUNCTION pgq._name_unconvertible_job(jsonb) IS $$_name_unconvertible_job: after _job_rows failed with a data exception, convert the
elements one by one and raise PQ400 naming the first that fails, with PostgreSQL's
message ("invalid input syntax for type integer: "high""). Returns normally when every
element converts on its own (the caller then re-raises the original error).$$;

-- enqueue_bulk: → queued for every job of a JSON array, in one INSERT, all or nothing.
-- Applies when every element is valid and none has an idempotency_key or depends_on (the
-- bulk case: no job can exist already or have to wait; pgq.enqueue_many takes those); the
-- fast path of pgq.Client.enqueue_many and POST /jobs/batch (its cost beside COPY into
-- pgq.jobs: benchmarks/README.md, "Bulk enqueue").
-- Input, defaults, rules and messages are pgq.enqueue_many's. Leaves the new jobs queued,
-- inserted in input order (so their ids ascend in that order); pgq.jobs' insert triggers
-- wake each queue once, as for any insert. Returns one row: ids (input order), run_ats
-- (each job's run_at in input order, or NULL when every job runs at created_at, the common
-- case of no run_at and no delay_seconds) and created_at (now(), also every job's
-- updated_at); every other column is what the input said or pgq.enqueue's default
-- (attempts 0), so a caller that has the input needs no full rows back.
-- Raises PQ400 naming the first invalid element (jobs[i], counting from 0), including a
-- value of the wrong type and an element with idempotency_key or depends_on.
CREATE FUNCTION pgq.enqueue_bulk(jobs jsonb)
RETURNS TABLE (ids bigint[], run_ats timestamptz[], created_at timestamptz)
LANGUAGE plpgsql AS $$
DECLARE
    bad record;
BEGIN
    PERFORM pgq._check_job_array(jobs);
    BEGIN
        SELECT s.ord - 1 AS idx, s.problem INTO bad
          FROM (SELECT r.ord,
                       CASE WHEN r.idempotency_key IS NOT NULL OR r.depends_on IS NOT NULL
                            THEN 'idempotency_key and depends_on are not taken here: '
                                 'use pgq.enqueue_many'
                            ELSE coalesce(pgq._invalid_job(r.type, r.args, r.queue, r.priority,
                                                           r.run_at, r.max_attempts,
                                                           r.timeout_seconds),
                                          pgq._invalid_key(r.concurrency_key),
                                          pgq._invalid_trace_context(r.trace_context))
                       END AS problem
                  FROM pgq._job_rows(jobs) AS r) AS s
         WHERE s.problem IS NOT NULL
         ORDER BY s.ord LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'cannot enqueue jobs[%]: %', bad.idx, bad.problem
                USING ERRCODE = 'PQ400';
        END IF;

        -- ORDER BY r.ord costs no sort (the planner knows WITH ORDINALITY's order); ids come
        -- from the identity sequence in insertion order, so ORDER BY id is input order.
        RETURN QUERY
        WITH inserted AS (
            INSERT INTO pgq.jobs (type, args, queue, priority, run_at, max_attempts,
                                  timeout_seconds, concurrency_key, trace_context)
            SELECT r.type, r.args, r.queue, r.priority, r.run_at, r.max_attempts,
                   r.timeout_seconds, r.concurrency_key, r.trace_context
              FROM pgq._job_rows(jobs) AS r
             ORDER BY r.ord
            RETURNING id, run_at
        )
        SELECT coalesce(array_agg(i.id ORDER BY i.id), '{}'),
               CASE WHEN bool_and(i.run_at = now()) IS NOT TRUE
                    THEN coalesce(array_agg(i.run_at ORDER BY i.id), '{}') END,
               now()
          FROM inserted AS i;
    EXCEPTION WHEN data_exception THEN
        PERFORM pgq._name_unconvertible_job(jobs);
        RAISE;
    END;
END
$$;
COMMENT ON FUNCTION pgq.enqueue_bulk(jsonb) IS $$enqueue_bulk: → queued for every job of a JSON array, in one INSERT, all or nothing.
Applies when every element is valid and none has an idempotency_key or depends_on (the
bulk case: no job can exist already or have to wait; pgq.enqueue_many takes those); the
fast path of pgq.Client.enqueue_many and POST /jobs/batch (its cost beside COPY into
pgq.jobs: benchmarks/README.md, "Bulk enqueue").
Input, defaults, rules and messages are pgq.enqueue_many's. Leaves the new jobs queued,
inserted in input order (so their ids ascend in that order); pgq.jobs' insert triggers
wake each queue once, as for any insert. Returns one row: ids (input order), run_ats
(each job's run_at in input order, or NULL when every job runs at created_at, the common
case of no run_at and no delay_seconds) and created_at (now(), also every job's
updated_at); every other column is what the input said or pgq.enqueue's default
(attempts 0), so a caller that has the input needs no full rows back.
Raises PQ400 naming the first invalid element (jobs[i], counting from 0), including a
value of the wrong type and an element with idempotency_key or depends_on.$$;

-- enqueue_many: enqueue every job described in a JSON array, all or nothing.
-- Each element is an object with "type" and optionally "args", "queue", "priority",
-- "run_at" or "delay_seconds" (counted on the database's clock), "max_attempts",
-- "timeout_seconds", "idempotency_key", "depends_on", "concurrency_key", "trace_context";
-- a key that is absent or JSON null takes pgq.enqueue's default. Leaves the jobs as pgq.enqueue would and returns them in
-- input order. When no job has an idempotency_key or depends_on (the bulk case) they are
-- inserted by pgq.enqueue_bulk; otherwise every job goes through pgq.enqueue, one by one.
-- Raises PQ400 naming the first invalid element (jobs[i], counting from 0), including a
-- value of the wrong type, and 0A000 as pgq.enqueue does.
CREATE FUNCTION pgq.enqueue_many(jobs jsonb) RETURNS SETOF pgq.jobs
LANGUAGE plpgsql AS $$
DECLARE
    bad record;
    new_ids bigint[];
    specs pgq.job_spec[];
    spec pgq.job_spec;
    idx integer := 0;
BEGIN
    PERFORM pgq._check_job_array(jobs);

    IF NOT EXISTS (SELECT 1 FROM jsonb_array_elements(jobs) AS e
                    WHERE jsonb_typeof(e.value->'idempotency_key') <> 'null'
                       OR jsonb_typeof(e.value->'depends_on') <> 'null') THEN
        -- two statements: a query does not see rows inserted by a function it calls
        SELECT b.ids INTO new_ids FROM pgq.enqueue_bulk(jobs) AS b;
        RETURN QUERY
        SELECT j.*
          FROM unnest(new_ids) WITH ORDINALITY AS u(id, ord)
          JOIN pgq.jobs AS j ON j.id = u.id
         ORDER BY u.ord;
        RETURN;
    END IF;

    BEGIN
        specs := ARRAY(SELECT ROW(r.type, r.args, r.queue, r.priority, r.run_at,
                                  r.max_attempts, r.timeout_seconds, r.idempotency_key,
                                  r.depends_on, NULL, r.concurrency_key,
                                  r.trace_context)::pgq.job_spec
                         FROM pgq._job_rows(jobs) AS r
                        ORDER BY r.ord);
    EXCEPTION WHEN data_exception THEN
        PERFORM pgq._name_unconvertible_job(jobs);
        RAISE;
    END;

    -- every element is checked before the first is enqueued, so the first invalid one is named
    SELECT s.ord - 1 AS idx, s.problem INTO bad
      FROM (SELECT i.ordinality AS ord,
                   coalesce(pgq._invalid_job(i.type, i.args, i.queue, i.priority, i.run_at,
                                             i.max_attempts, i.timeout_seconds),
                            pgq._invalid_key(i.concurrency_key)) AS problem
              FROM unnest(specs) WITH ORDINALITY AS i) AS s
     WHERE s.problem IS NOT NULL
     ORDER BY s.ord LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'cannot enqueue jobs[%]: %', bad.idx, bad.problem USING ERRCODE = 'PQ400';
    END IF;

    FOREACH spec IN ARRAY specs LOOP
        BEGIN
            RETURN NEXT pgq.enqueue(spec.type, spec.args, spec.queue, spec.priority, spec.run_at,
                                    spec.max_attempts, spec.timeout_seconds,
                                    spec.idempotency_key, spec.depends_on,
                                    spec.concurrency_key, spec.trace_context);
        EXCEPTION WHEN SQLSTATE 'PQ400' THEN
            RAISE EXCEPTION 'cannot enqueue jobs[%]: %', idx,
                            regexp_replace(SQLERRM, '^cannot enqueue: ', '')
                USING ERRCODE = 'PQ400';
        END;
        idx := idx + 1;
    END LOOP;
END
$$;
COMMENT ON FUNCTION pgq.enqueue_many(jsonb) IS $$enqueue_many: enqueue every job described in a JSON array, all or nothing.
Each element is an object with "type" and optionally "args", "queue", "priority",
"run_at" or "delay_seconds" (counted on the database's clock), "max_attempts",
"timeout_seconds", "idempotency_key", "depends_on", "concurrency_key", "trace_context";
a key that is absent or JSON null takes pgq.enqueue's default. Leaves the jobs as pgq.enqueue would and returns them in
input order. When no job has an idempotency_key or depends_on (the bulk case) they are
inserted by pgq.enqueue_bulk; otherwise every job goes through pgq.enqueue, one by one.
Raises PQ400 naming the first invalid element (jobs[i], counting from 0), including a
value of the wrong type, and 0A000 as pgq.enqueue does.$$;

-- _pick_due: the claim of ready jobs, shared by pgq.claim's fast path and
-- pgq._claim_limited: up to max_jobs due queued jobs of one queue (run_at has passed; of
-- job_types, NULL: any), in claim order (priority, then run_at, then id). Walks the queue
-- one priority at a time (lowest first, pgq._queued_priorities), each a range of
-- jobs_claim_idx (queue, priority, run_at, id) already in claim order, from the
-- priority's first queued job to "run_at <= now()", so the walk stops after max_jobs rows whatever the backlog and whatever the
-- statistics (no other index covers queued jobs in that order, and no plan sorts the queue).
-- PL/pgSQL with pgq.claim's plan settings, so that the walk is planned once per session:
-- a LANGUAGE sql function that locks rows must be VOLATILE, is never inlined, and had its
-- query planned afresh at every call (0.4-0.7 ms, most of a claim at 10,000 jobs); a
-- PL/pgSQL query left to plan_cache_mode = auto was planned afresh too (its custom plans,
-- which know max_jobs, always look cheaper than the generic one, which guesses that a
-- LIMIT of a parameter reads 10 % of the rows).
-- Applies to any queue: flow control is the caller's. Leaves the picked rows locked
-- FOR UPDATE, unchanged; a row another transaction holds is skipped (SKIP LOCKED: a row
-- another claimer is taking is simply not ours), never waited on. Returns id, priority
-- and run_at of each, in claim order. Raises nothing.
CREATE FUNCTION pgq._pick_due(queue text, max_jobs integer, job_types text[])
RETURNS TABLE (id bigint, priority integer, run_at timestamptz)
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
SET jit = off
SET enable_sort = off
AS $$
BEGIN
    RETURN QUERY
    SELECT f.id, f.priority, f.run_at
      FROM pgq._queued_priorities(_pick_due.queue) AS p
     CROSS JOIN LATERAL (
           SELECT j.id, j.priority, j.run_at
             FROM pgq.jobs AS j
            WHERE j.status = 'queued'
              AND j.queue = _pick_due.queue
              AND j.priority = p.priority
              AND (j.run_at, j.id) >= (p.run_at, p.id)
              AND j.run_at <= now()
              AND (_pick_due.job_types IS NULL OR j.type = ANY (_pick_due.job_types))
            ORDER BY j.run_at, j.id
            LIMIT _pick_due.max_jobs
              FOR UPDATE SKIP LOCKED) AS f
     LIMIT _pick_due.max_jobs;
END
$$;
COMMENT ON FUNCTION pgq._pick_due(text, integer, text[]) IS $$_pick_due: the claim of ready jobs, shared by pgq.claim's fast path and
pgq._claim_limited: up to max_jobs due queued jobs of one queue (run_at has passed; of
job_types, NULL: any), in claim order (priority, then run_at, then id). Walks the queue
one priority at a time (lowest first, pgq._queued_priorities), each a range of
jobs_claim_idx (queue, priority, run_at, id) already in claim order, from the
priority's first queued job to "run_at <= now()", so the walk stops after max_jobs rows whatever the backlog and whatever the
statistics (no other index covers queued jobs in that order, and no plan sorts the queue).
PL/pgSQL with pgq.claim's plan settings, so that the walk is planned once per session:
a LANGUAGE sql function that locks rows must be VOLATILE, is never inlined, and had its
query planned afresh at every call (0.4-0.7 ms, most of a claim at 10,000 jobs); a
PL/pgSQL query left to plan_cache_mode = auto was planned afresh too (its custom plans,
which know max_jobs, always look cheaper than the generic one, which guesses that a
LIMIT of a parameter reads 10 % of the rows).
Applies to any queue: flow control is the caller's. Leaves the picked rows locked
FOR UPDATE, unchanged; a row another transaction holds is skipped (SKIP LOCKED: a row
another claimer is taking is simply not ours), never waited on. Returns id, priority
and run_at of each, in claim order. Raises nothing.$$;

-- claim: queued → running for up to max_jobs jobs whose run_at has passed, in claim order
-- (priority, then run_at, then id), from the given queues (NULL: every queue) and
-- optionally only of some types, within each queue's flow control (pgq.queues): nothing
-- from a paused queue, never more than concurrency running jobs per queue nor
-- key_concurrency per concurrency_key (a key's jobs start in claim order), at most
-- burst + rate × T claims in any T seconds; a limit met means fewer jobs, never an error.
-- Queues without settings cost one probe of pgq.queues more than before; the others go
-- through pgq._claim_limited. Leaves each claimed job with attempts + 1, worker_id,
-- claimed_at, a lease of 1.25 × timeout_seconds and a fresh secret lease_token, progress
-- cleared, and, while a
-- session watches events (pgq.watch_events), a pgq_events notification {"id",
-- "status": "running", "queue", "type"} per job. Rows locked by another transaction are
-- skipped (FOR UPDATE SKIP LOCKED), never waited on, so concurrent claimers never get the
-- same job. Returns the claimed jobs in claim order, nothing when nothing is due.
-- Raises PQ400 for an empty worker_id or a max_jobs outside 1..10000, and 0A000 for a
-- queue with limits inside a REPEATABLE READ transaction.
-- Plan settings, which hold for everything it calls, so that the plan cannot go bad
-- whatever the statistics say: each query is planned once per session, generically
-- (force_generic_plan, see pgq._pick_due); never compiled (jit = off: at 10M jobs a generic
-- plan's estimate passed jit_above_cost, and every claim spent 25-270 ms compiling a plan
-- that then read a few index pages); and no sort (enable_sort = off), so the walk's only
-- plan is an ordered read of jobs_claim_idx: with statistics that said queued jobs were
-- rare (analyzed before a bulk load) the planner read every queued job of the queue
-- through jobs_list_status_idx and sorted them, 60,000 rows for a claim of 10.
CREATE FUNCTION pgq.claim(
    worker_id text,
    max_jobs integer DEFAULT 1,
    queues text[] DEFAULT NULL,
    job_types text[] DEFAULT NULL
) RETURNS SETOF pgq.jobs
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
SET jit = off
SET enable_sort = off
AS $$
DECLARE
    wanted text[];
    ruled text[];
BEGIN
    IF worker_id IS NULL OR length(worker_id) NOT BETWEEN 1 AND 255 THEN
        RAISE EXCEPTION 'cannot claim: worker_id must be 1-255 characters' USING ERRCODE = 'PQ400';
    END IF;
    IF max_jobs IS NULL OR max_jobs NOT BETWEEN 1 AND 10000 THEN
        RAISE EXCEPTION 'cannot claim: max_jobs % is out of range 1..10000', max_jobs
            USING ERRCODE = 'PQ400';
    END IF;

    -- The fast path pays one probe of pgq.queues (usually empty), written without a
    -- parameter: "q.queue = ANY (queues)" made PL/pgSQL plan it afresh at every call
    -- (a custom plan), which cost a claim(1) several times the probe itself.
    SELECT array_agg(q.queue) INTO ruled
      FROM pgq.queues AS q
     WHERE q.paused OR q.concurrency IS NOT NULL OR q.key_concurrency IS NOT NULL
        OR q.rate IS NOT NULL;
    IF ruled IS NOT NULL AND (queues IS NULL OR ruled && queues) THEN
        wanted := coalesce(queues, ARRAY(SELECT q.queue FROM pgq._queued_queues() AS q(queue)));
        ruled := ARRAY(SELECT unnest(ruled) INTERSECT SELECT unnest(wanted));
        IF cardinality(ruled) > 0 THEN
            RETURN QUERY SELECT * FROM pgq._claim_limited(claim.worker_id, max_jobs, wanted,
                                                          ruled, job_types);
            RETURN;
        END IF;
    END IF;

    RETURN QUERY
    WITH candidates AS (
        -- Per queue, the first max_jobs due jobs in claim order, locked (pgq._pick_due:
        -- a walk of jobs_claim_idx one priority at a time). With several queues up to
        -- max_jobs rows per queue are locked here and the best max_jobs of them claimed;
        -- the others stay locked, unchanged, until the claiming transaction ends.
        SELECT c.id, c.priority, c.run_at
          FROM (SELECT DISTINCT unnest(coalesce(queues, ARRAY(SELECT q.queue
                                                               FROM pgq._queued_queues() AS q(queue)))))
               AS wanted(queue)
         CROSS JOIN LATERAL pgq._pick_due(wanted.queue, max_jobs, job_types) AS c
    ), claimed AS (
        -- The picked ids as one array, looked up through the primary key: a join with
        -- the candidates could be planned as a hash join over a sequential scan of the
        -- whole table when the statistics are off (seen right after a bulk load).
        UPDATE pgq.jobs AS j
           SET status = 'running',
               attempts = j.attempts + 1,
               worker_id = claim.worker_id,
               claimed_at = now(),
               lease_expires_at = now() + make_interval(secs => j.timeout_seconds * 1.25),
               lease_token = gen_random_uuid(),
               progress = NULL,
               updated_at = now()
         WHERE j.id = ANY (ARRAY(SELECT c.id FROM candidates AS c
                                  ORDER BY c.priority, c.run_at, c.id LIMIT max_jobs))
        RETURNING j.*
    ), announced AS (
        -- → running, for GET /events, only while someone follows every change
        -- (pgq.event_watchers, sql/0007_progress.sql): a NOTIFY costs the commit the
        -- global notify lock. One aggregate over the claimed rows, not a row trigger.
        SELECT count(pg_notify('pgq_events', json_build_object(
                   'id', a.id, 'status', 'running', 'queue', a.queue, 'type', a.type)::text)) AS n
          FROM claimed AS a
         WHERE EXISTS (SELECT 1 FROM pgq.event_watchers)
    )
    SELECT c.* FROM claimed AS c CROSS JOIN announced ORDER BY c.priority, c.run_at, c.id;
END
$$;
COMMENT ON FUNCTION pgq.claim(text, integer, text[], text[]) IS $$claim: queued → running for up to max_jobs jobs whose run_at has passed, in claim order
(priority, then run_at, then id), from the given queues (NULL: every queue) and
optionally only of some types, within each queue's flow control (pgq.queues): nothing
from a paused queue, never more than concurrency running jobs per queue nor
key_concurrency per concurrency_key (a key's jobs start in claim order), at most
burst + rate × T claims in any T seconds; a limit met means fewer jobs, never an error.
Queues without settings cost one probe of pgq.queues more than before; the others go
through pgq._claim_limited. Leaves each claimed job with attempts + 1, worker_id,
claimed_at, a lease of 1.25 × timeout_seconds and a fresh secret lease_token, progress
cleared, and, while a
session watches events (pgq.watch_events), a pgq_events notification {"id",
"status": "running", "queue", "type"} per job. Rows locked by another transaction are
skipped (FOR UPDATE SKIP LOCKED), never waited on, so concurrent claimers never get the
same job. Returns the claimed jobs in claim order, nothing when nothing is due.
Raises PQ400 for an empty worker_id or a max_jobs outside 1..10000, and 0A000 for a
queue with limits inside a REPEATABLE READ transaction.
Plan settings, which hold for everything it calls, so that the plan cannot go bad
whatever the statistics say: each query is planned once per session, generically
(force_generic_plan, see pgq._pick_due); never compiled (jit = off: at 10M jobs a generic
plan's estimate passed jit_above_cost, and every claim spent 25-270 ms compiling a plan
that then read a few index pages); and no sort (enable_sort = off), so the walk's only
plan is an ordered read of jobs_claim_idx: with statistics that said queued jobs were
rare (analyzed before a bulk load) the planner read every queued job of the queue
through jobs_list_status_idx and sorted them, 60,000 rows for a claim of 10.$$;

-- complete: running → succeeded. Applies when the job is running, held by worker_id and,
-- when attempt is given, on that attempt, and when lease_token is given, under that lease
-- (SQL callers may omit it; the HTTP API requires it). Leaves result, finished_at, the lease
-- and its token cleared,
-- waiting dependents released, a pgq_events notification (sent here by
-- pgq._announce_succeeded, not by the UPDATE trigger).
-- Raises PQ404 (no such job), PQ419 (lease_token not the current one) or PQ409 (not
-- running, another holder, another attempt), and 0A000 inside a REPEATABLE READ transaction
-- (see _require_fresh_snapshots).
CREATE FUNCTION pgq.complete(
    job_id bigint,
    worker_id text,
    result jsonb DEFAULT NULL,
    attempt integer DEFAULT NULL,
    lease_token uuid DEFAULT NULL
) RETURNS pgq.jobs
LANGUAGE plpgsql AS $$
DECLARE
    j pgq.jobs;
BEGIN
    UPDATE pgq.jobs AS t
       SET status = 'succeeded', result = complete.result, finished_at = now(),
           lease_expires_at = NULL, lease_token = NULL, updated_at = now()
     -- lease_expires_at IS NOT NULL: "running", written so (see jobs_lease_idx)
     WHERE t.id = job_id AND t.lease_expires_at IS NOT NULL AND t.worker_id = complete.worker_id
       AND (attempt IS NULL OR t.attempts = attempt)
       AND (complete.lease_token IS NULL OR t.lease_token = complete.lease_token)
    RETURNING * INTO j;
    IF NOT FOUND THEN
        PERFORM pgq._refuse(job_id, worker_id, attempt, 'complete', complete.lease_token);
    END IF;
    PERFORM pgq._announce_succeeded(ARRAY[j.id], ARRAY[j.queue], ARRAY[j.type]);
    PERFORM pgq._release_dependents(j.id);
    RETURN j;
END
$$;
COMMENT ON FUNCTION pgq.complete(bigint, text, jsonb, integer, uuid) IS $$complete: running → succeeded. Applies when the job is running, held by worker_id and,
when attempt is given, on that attempt, and when lease_token is given, under that lease
(SQL callers may omit it; the HTTP API requires it). Leaves result, finished_at, the lease
and its token cleared,
waiting dependents released, a pgq_events notification (sent here by
pgq._announce_succeeded, not by the UPDATE trigger).
Raises PQ404 (no such job), PQ419 (lease_token not the current one) or PQ409 (not
running, another holder, another attempt), and 0A000 inside a REPEATABLE READ transaction
(see _require_fresh_snapshots).$$;

-- fail: running → queued with backoff, or → dead. Applies when the job is running, held by
-- worker_id and, when attempt is given, on that attempt, and when lease_token is given, under
-- that lease. The job is retried when retryable
-- and attempts < max_attempts: run_at = now() + retry_delay (when given) or the backoff.
-- Otherwise it is dead. Leaves the error (cut to 16 KiB) in last_error and appended to errors (the last 20 kept), the lease
-- and its token cleared; when dead, finished_at, a pgq_events notification and its waiting dependents dead.
-- Raises PQ400 for a negative retry_delay, PQ404 (no such job), PQ419 (lease_token not the
-- current one) or PQ409 (not running, another holder, another attempt), and 0A000 when the
-- job ends dead inside a REPEATABLE READ transaction.
CREATE FUNCTION pgq.fail(
    job_id bigint,
    worker_id text,
    error jsonb,
    retryable boolean DEFAULT true,
    attempt integer DEFAULT NULL,
    retry_delay interval DEFAULT NULL,
    lease_token uuid DEFAULT NULL
) RETURNS pgq.jobs
LANGUAGE plpgsql AS $$
DECLARE
    j pgq.jobs;
BEGIN
    IF retry_delay IS NOT NULL AND retry_delay < interval '0' THEN
        RAISE EXCEPTION 'cannot fail job %: retry_delay must not be negative', job_id
            USING ERRCODE = 'PQ400';
    END IF;

    UPDATE pgq.jobs AS t
       SET status = CASE WHEN retryable AND t.attempts < t.max_attempts THEN 'queued' ELSE 'dead' END,
           run_at = CASE WHEN retryable AND t.attempts < t.max_attempts
                         THEN now() + coalesce(retry_delay, pgq.backoff(t.attempts))
                         ELSE t.run_at END,
           finished_at = CASE WHEN retryable AND t.attempts < t.max_attempts THEN NULL ELSE now() END,
           last_error = pgq._error_entry(error, t.attempts),
           errors = pgq._append_error(t.errors, pgq._error_entry(error, t.attempts)),
           lease_expires_at = NULL,
           lease_token = NULL,
           updated_at = now()
     -- lease_expires_at IS NOT NULL: "running", written so (see jobs_lease_idx)
     WHERE t.id = job_id AND t.lease_expires_at IS NOT NULL AND t.worker_id = fail.worker_id
       AND (attempt IS NULL OR t.attempts = attempt)
       AND (fail.lease_token IS NULL OR t.lease_token = fail.lease_token)
    RETURNING * INTO j;
    IF NOT FOUND THEN
        PERFORM pgq._refuse(job_id, worker_id, attempt, 'fail', fail.lease_token);
    END IF;
    IF j.status = 'dead' THEN
        PERFORM pgq._doom_dependents(ARRAY[j.id]);
    END IF;
    RETURN j;
END
$$;
COMMENT ON FUNCTION pgq.fail(bigint, text, jsonb, boolean, integer, interval, uuid) IS $$fail: running → queued with backoff, or → dead. Applies when the job is running, held by
worker_id and, when attempt is given, on that attempt, and when lease_token is given, under
that lease. The job is retried when retryable
and attempts < max_attempts: run_at = now() + retry_delay (when given) or the backoff.
Otherwise it is dead. Leaves the error (cut to 16 KiB) in last_error and appended to errors (the last 20 kept), the lease
and its token cleared; when dead, finished_at, a pgq_events notification and its waiting dependents dead.
Raises PQ400 for a negative retry_delay, PQ404 (no such job), PQ419 (lease_token not the
current one) or PQ409 (not running, another holder, another attempt), and 0A000 when the
job ends dead inside a REPEATABLE READ transaction.$$;

-- heartbeat: running → running with a fresh lease of 1.25 × timeout_seconds from now.
-- Applies when the job is running, held by worker_id and, when attempt is given, on it, and
-- when lease_token is given, under that lease. Leaves everything else as it was.
-- Raises PQ404 (no such job), PQ419 (lease_token not the current one) or PQ409 (not
-- running, another holder, another attempt).
CREATE FUNCTION pgq.heartbeat(job_id bigint, worker_id text, attempt integer DEFAULT NULL,
                              lease_token uuid DEFAULT NULL)
RETURNS pgq.jobs
LANGUAGE plpgsql AS $$
DECLARE
    j pgq.jobs;
BEGIN
    UPDATE pgq.jobs AS t
       SET lease_expires_at = now() + make_interval(secs => t.timeout_seconds * 1.25),
           updated_at = now()
     -- lease_expires_at IS NOT NULL: "running", written so (see jobs_lease_idx)
     WHERE t.id = job_id AND t.lease_expires_at IS NOT NULL AND t.worker_id = heartbeat.worker_id
       AND (attempt IS NULL OR t.attempts = attempt)
       AND (heartbeat.lease_token IS NULL OR t.lease_token = heartbeat.lease_token)
    RETURNING * INTO j;
    IF NOT FOUND THEN
        PERFORM pgq._refuse(job_id, worker_id, attempt, 'heartbeat', heartbeat.lease_token);
    END IF;
    RETURN j;
END
$$;
COMMENT ON FUNCTION pgq.heartbeat(bigint, text, integer, uuid) IS $$heartbeat: running → running with a fresh lease of 1.25 × timeout_seconds from now.
Applies when the job is running, held by worker_id and, when attempt is given, on it, and
when lease_token is given, under that lease. Leaves everything else as it was.
Raises PQ404 (no such job), PQ419 (lease_token not the current one) or PQ409 (not
running, another holder, another attempt).$$;

-- release: running → queued now, for a job its runner gave up on for reasons of its own
-- (shutdown after the grace period), not because the job failed. Applies when the job is
-- running, held by worker_id and, when attempt is given, on that attempt, and when
-- lease_token is given, under that lease. attempts never
-- goes down (fencing relies on it), so the interrupted attempt is given back by raising
-- max_attempts by one: a job released on its last attempt runs again instead of going
-- dead. Leaves run_at = now(), the lease and its token cleared, the reason in last_error
-- and appended to errors (kind "released"), and a pgq_<queue> wake-up so another runner
-- takes it at once. Raises PQ404 (no such job), PQ419 (lease_token not the current one) or
-- PQ409 (not running, another holder, another attempt).
CREATE FUNCTION pgq.release(
    job_id bigint,
    worker_id text,
    reason jsonb DEFAULT NULL,
    attempt integer DEFAULT NULL,
    lease_token uuid DEFAULT NULL
) RETURNS pgq.jobs
LANGUAGE plpgsql AS $$
DECLARE
    j pgq.jobs;
BEGIN
    UPDATE pgq.jobs AS t
       SET status = 'queued',
           run_at = now(),
           max_attempts = t.max_attempts + 1,
           last_error = pgq._error_entry(coalesce(reason, '"released by its runner"'),
                                         t.attempts) || '{"kind": "released"}',
           errors = pgq._append_error(t.errors,
               pgq._error_entry(coalesce(reason, '"released by its runner"'), t.attempts)
               || '{"kind": "released"}'),
           lease_expires_at = NULL,
           lease_token = NULL,
           updated_at = now()
     -- lease_expires_at IS NOT NULL: "running", written so (see jobs_lease_idx)
     WHERE t.id = job_id AND t.lease_expires_at IS NOT NULL AND t.worker_id = release.worker_id
       AND (attempt IS NULL OR t.attempts = attempt)
       AND (release.lease_token IS NULL OR t.lease_token = release.lease_token)
    RETURNING * INTO j;
    IF NOT FOUND THEN
        PERFORM pgq._refuse(job_id, worker_id, attempt, 'release', release.lease_token);
    END IF;
    RETURN j;
END
$$;
COMMENT ON FUNCTION pgq.release(bigint, text, jsonb, integer, uuid) IS $$release: running → queued now, for a job its runner gave up on for reasons of its own
(shutdown after the grace period), not because the job failed. Applies when the job is
running, held by worker_id and, when attempt is given, on that attempt, and when
lease_token is given, under that lease. attempts never
goes down (fencing relies on it), so the interrupted attempt is given back by raising
max_attempts by one: a job released on its last attempt runs again instead of going
dead. Leaves run_at = now(), the lease and its token cleared, the reason in last_error
and appended to errors (kind "released"), and a pgq_<queue> wake-up so another runner
takes it at once. Raises PQ404 (no such job), PQ419 (lease_token not the current one) or
PQ409 (not running, another holder, another attempt).$$;

-- cancel: waiting / queued / running → cancelled. Leaves finished_at, the lease cleared,
-- a pgq_events notification (which tells the runner holding a running job to stop its
-- handler) and the job's waiting dependents dead.
-- Raises PQ404 (no such job) or PQ409 (already succeeded, dead or cancelled), and 0A000
-- inside a REPEATABLE READ transaction (see _require_fresh_snapshots).
CREATE FUNCTION pgq.cancel(job_id bigint) RETURNS pgq.jobs
LANGUAGE plpgsql AS $$
DECLARE
    j pgq.jobs;
    current_status text;
BEGIN
    UPDATE pgq.jobs AS t
       SET status = 'cancelled', finished_at = now(), lease_expires_at = NULL, lease_token = NULL,
           updated_at = now()
     WHERE t.id = job_id AND t.status IN ('waiting', 'queued', 'running')
    RETURNING * INTO j;
    IF NOT FOUND THEN
        SELECT status INTO current_status FROM pgq.jobs WHERE id = job_id;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'job % does not exist', job_id USING ERRCODE = 'PQ404';
        END IF;
        RAISE EXCEPTION 'cannot cancel: job % has already finished (status %)', job_id, current_status
            USING ERRCODE = 'PQ409';
    END IF;
    PERFORM pgq._doom_dependents(ARRAY[j.id]);
    RETURN j;
END
$$;
COMMENT ON FUNCTION pgq.cancel(bigint) IS $$cancel: waiting / queued / running → cancelled. Leaves finished_at, the lease cleared,
a pgq_events notification (which tells the runner holding a running job to stop its
handler) and the job's waiting dependents dead.
Raises PQ404 (no such job) or PQ409 (already succeeded, dead or cancelled), and 0A000
inside a REPEATABLE READ transaction (see _require_fresh_snapshots).$$;

-- retry: dead / cancelled → queued now (dead-letter replay), or → waiting when some parent
-- has not finished yet. attempts and the error history are kept; max_attempts becomes
-- attempts + extra_attempts. Raises PQ404 (no such job), PQ409 (not dead or cancelled, or
-- a parent is itself dead or cancelled: retry that one first) or PQ400 (extra_attempts
-- outside 1..1000), and 0A000 for a job with depends_on inside a REPEATABLE READ transaction.
CREATE FUNCTION pgq.retry(job_id bigint, extra_attempts integer DEFAULT 1) RETURNS pgq.jobs
LANGUAGE plpgsql AS $$
DECLARE
    j pgq.jobs;
    unfinished integer := 0;
    failed_parents bigint[];
BEGIN
    IF extra_attempts IS NULL OR extra_attempts NOT BETWEEN 1 AND 1000 THEN
        RAISE EXCEPTION 'cannot retry job %: extra_attempts % is out of range 1..1000',
                        job_id, extra_attempts USING ERRCODE = 'PQ400';
    END IF;
    SELECT * INTO j FROM pgq.jobs WHERE id = job_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'job % does not exist', job_id USING ERRCODE = 'PQ404';
    ELSIF j.status NOT IN ('dead', 'cancelled') THEN
        RAISE EXCEPTION 'cannot retry: job % is not dead or cancelled (status %)', job_id, j.status
            USING ERRCODE = 'PQ409';
    END IF;

    IF j.depends_on IS NOT NULL THEN
        PERFORM pgq._require_fresh_snapshots('retry a job with depends_on');
        SELECT count(*) FILTER (WHERE p.status <> 'succeeded'),
               array_agg(p.id) FILTER (WHERE p.status IN ('dead', 'cancelled'))
          INTO unfinished, failed_parents
          FROM (SELECT id, status FROM pgq.jobs WHERE id = ANY (j.depends_on) ORDER BY id FOR SHARE) AS p;
        IF failed_parents IS NOT NULL THEN
            RAISE EXCEPTION 'cannot retry: job % depends on job(s) % that ended dead or cancelled',
                            job_id, array_to_string(failed_parents, ', ')
                USING ERRCODE = 'PQ409', HINT = 'Retry those jobs first.';
        END IF;
    END IF;

    UPDATE pgq.jobs AS t
       SET status = CASE WHEN unfinished > 0 THEN 'waiting' ELSE 'queued' END,
           run_at = now(), max_attempts = t.attempts + extra_attempts,
           finished_at = NULL, lease_expires_at = NULL, updated_at = now()
     WHERE t.id = job_id
    RETURNING * INTO j;
    RETURN j;
END
$$;
COMMENT ON FUNCTION pgq.retry(bigint, integer) IS $$retry: dead / cancelled → queued now (dead-letter replay), or → waiting when some parent
has not finished yet. attempts and the error history are kept; max_attempts becomes
attempts + extra_attempts. Raises PQ404 (no such job), PQ409 (not dead or cancelled, or
a parent is itself dead or cancelled: retry that one first) or PQ400 (extra_attempts
outside 1..1000), and 0A000 for a job with depends_on inside a REPEATABLE READ transaction.$$;

-- expire_leases_detailed: running → queued with backoff (attempts left) or → dead, for
-- every job whose lease ran out (the runner holding it crashed, hung or lost the database).
-- Each is recorded as a failed attempt with a "lease_expired" error; dead ones doom their
-- waiting dependents. Returns the expired jobs as they are now (queued or dead), in lease
-- order. Safe to call from many processes at once: rows another caller is expiring are
-- skipped. Raises 0A000 when a job ends dead inside a REPEATABLE READ transaction (see
-- _require_fresh_snapshots).
CREATE FUNCTION pgq.expire_leases_detailed() RETURNS SETOF pgq.jobs
LANGUAGE plpgsql AS $$
DECLARE
    j pgq.jobs;
    dead_ids bigint[] := '{}';
BEGIN
    FOR j IN
        WITH expired AS (
            SELECT x.id, x.lease_expires_at,
                   pgq._error_entry(jsonb_build_object(
                       'message', format('lease expired: worker %s stopped heartbeating (lease ended %s)',
                                         x.worker_id, x.lease_expires_at),
                       'kind', 'lease_expired'), x.attempts) AS entry
              FROM pgq.jobs AS x
             WHERE x.status = 'running' AND x.lease_expires_at < now()
             ORDER BY x.lease_expires_at
               FOR UPDATE SKIP LOCKED
        )
        UPDATE pgq.jobs AS t
           SET status = CASE WHEN t.attempts < t.max_attempts THEN 'queued' ELSE 'dead' END,
               run_at = CASE WHEN t.attempts < t.max_attempts
                             THEN now() + pgq.backoff(t.attempts) ELSE t.run_at END,
               finished_at = CASE WHEN t.attempts < t.max_attempts THEN NULL ELSE now() END,
               last_error = expired.entry,
               errors = pgq._append_error(t.errors, expired.entry),
               lease_expires_at = NULL,
               lease_token = NULL,
               updated_at = now()
          FROM expired
         WHERE t.id = expired.id
        RETURNING t.*
    LOOP
        IF j.status = 'dead' THEN
            dead_ids := dead_ids || j.id;
        END IF;
        RETURN NEXT j;
    END LOOP;
    IF cardinality(dead_ids) > 0 THEN
        PERFORM pgq._doom_dependents(dead_ids);
    END IF;
END
$$;
COMMENT ON FUNCTION pgq.expire_leases_detailed() IS $$expire_leases_detailed: running → queued with backoff (attempts left) or → dead, for
every job whose lease ran out (the runner holding it crashed, hung or lost the database).
Each is recorded as a failed attempt with a "lease_expired" error; dead ones doom their
waiting dependents. Returns the expired jobs as they are now (queued or dead), in lease
order. Safe to call from many processes at once: rows another caller is expiring are
skipped. Raises 0A000 when a job ends dead inside a REPEATABLE READ transaction (see
_require_fresh_snapshots).$$;

-- expire_leases: pgq.expire_leases_detailed, counted: returns how many jobs it expired.
-- Same conditions, effects and exceptions.
CREATE FUNCTION pgq.expire_leases() RETURNS integer
LANGUAGE sql AS $$
    SELECT count(*)::integer FROM pgq.expire_leases_detailed()
$$;
COMMENT ON FUNCTION pgq.expire_leases() IS $$expire_leases: pgq.expire_leases_detailed, counted: returns how many jobs it expired.
Same conditions, effects and exceptions.$$;

-- stats: per queue and status, how many jobs and, for waiting, queued and running jobs,
-- the oldest run_at (NULL for the finished statuses). Waiting, queued and running jobs
-- are counted exactly, through the partial indexes that cover them, so their cost grows
-- with the backlog, never with history. Succeeded, dead and cancelled jobs are counted
-- exactly while the table is small (at most 1,000 pages, ~8 MB), and beyond that
-- estimated: the share of each (queue, status) in the extended statistics
-- jobs_queue_status (the sample ANALYZE takes; autovacuum refreshes it after 1,000 + 2 %
-- changed rows) times the table's current row estimate, the planner's own arithmetic; a
-- (queue, status) too rare to be in that sample is left out. A large table never analyzed
-- (a bulk load or mass update before autovacuum's first ANALYZE) has no such sample, so
-- its finished jobs are estimated from a TABLESAMPLE of about 300 pages instead of being
-- counted one by one. Leaves nothing behind; raises nothing.
CREATE FUNCTION pgq.stats()
RETURNS TABLE (queue text, status text, count bigint, oldest_run_at timestamptz)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    pages double precision;
    rows_now double precision;
    vals text[];
    freqs double precision[];
    sample_percent double precision;
BEGIN
    SELECT e.most_common_vals, e.most_common_freqs INTO vals, freqs
      FROM pg_stats_ext AS e
     WHERE e.statistics_schemaname = 'pgq' AND e.statistics_name = 'jobs_queue_status';
    pages := pg_relation_size('pgq.jobs') / current_setting('block_size')::integer;
    SELECT c.reltuples / c.relpages * pages INTO rows_now
      FROM pg_class AS c
     WHERE c.oid = 'pgq.jobs'::regclass AND c.relpages > 0 AND c.reltuples > 0;
    IF pages > 1000 AND (rows_now IS NULL OR freqs IS NULL) THEN
        -- No ANALYZE yet: take the shares from ~300 random pages (SYSTEM sampling reads
        -- whole pages, so this costs ~300 page reads at any size). Each sampled row
        -- stands for 100 / sample_percent rows.
        sample_percent := 100.0 * 300 / pages;
        SELECT array_agg(ARRAY[s.queue, s.status]), array_agg(s.n) INTO vals, freqs
          FROM (SELECT j.queue, j.status, count(*)::float8 AS n
                  FROM pgq.jobs AS j TABLESAMPLE SYSTEM (sample_percent)
                 GROUP BY j.queue, j.status) AS s;
        rows_now := 100 / sample_percent;
    END IF;
    IF pages <= 1000 OR rows_now IS NULL OR freqs IS NULL THEN
        RETURN QUERY
        SELECT j.queue, j.status, count(*),
               min(j.run_at) FILTER (WHERE j.status IN ('waiting', 'queued', 'running'))
          FROM pgq.jobs AS j
         GROUP BY j.queue, j.status
         ORDER BY j.queue, j.status;
        RETURN;
    END IF;
    RETURN QUERY
    WITH counted AS (
        SELECT j.queue, 'waiting' AS status, count(*) AS count, min(j.run_at) AS oldest_run_at
          FROM pgq.jobs AS j WHERE j.status = 'waiting' GROUP BY j.queue
        UNION ALL
        SELECT j.queue, 'queued', count(*), min(j.run_at)
          FROM pgq.jobs AS j WHERE j.status = 'queued' GROUP BY j.queue
        UNION ALL
        SELECT j.queue, 'running', count(*), min(j.run_at)
          FROM pgq.jobs AS j WHERE j.status = 'running' GROUP BY j.queue
        UNION ALL
        SELECT vals[i][1], vals[i][2], round(freqs[i] * rows_now)::bigint, NULL
          FROM generate_subscripts(freqs, 1) AS i
         WHERE vals[i][2] IN ('succeeded', 'dead', 'cancelled')
    )
    SELECT c.queue, c.status, c.count, c.oldest_run_at
      FROM counted AS c
     WHERE c.count > 0
     ORDER BY c.queue, c.status;
END
$$;
COMMENT ON FUNCTION pgq.stats() IS $$stats: per queue and status, how many jobs and, for waiting, queued and running jobs,
the oldest run_at (NULL for the finished statuses). Waiting, queued and running jobs
are counted exactly, through the partial indexes that cover them, so their cost grows
with the backlog, never with history. Succeeded, dead and cancelled jobs are counted
exactly while the table is small (at most 1,000 pages, ~8 MB), and beyond that
estimated: the share of each (queue, status) in the extended statistics
jobs_queue_status (the sample ANALYZE takes; autovacuum refreshes it after 1,000 + 2 %
changed rows) times the table's current row estimate, the planner's own arithmetic; a
(queue, status) too rare to be in that sample is left out. A large table never analyzed
(a bulk load or mass update before autovacuum's first ANALYZE) has no such sample, so
its finished jobs are estimated from a TABLESAMPLE of about 300 pages instead of being
counted one by one. Leaves nothing behind; raises nothing.$$;

-- prune: delete succeeded, dead and cancelled jobs that finished more than older_than ago.
-- Returns how many it deleted. Raises PQ400 for a negative or NULL interval.
CREATE FUNCTION pgq.prune(older_than interval) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    deleted integer;
BEGIN
    IF older_than IS NULL OR older_than < interval '0' THEN
        RAISE EXCEPTION 'cannot prune: older_than must be a non-negative interval'
            USING ERRCODE = 'PQ400';
    END IF;
    DELETE FROM pgq.jobs
     WHERE status IN ('succeeded', 'dead', 'cancelled')
       AND finished_at < now() - older_than;
    GET DIAGNOSTICS deleted = ROW_COUNT;
    RETURN deleted;
END
$$;
COMMENT ON FUNCTION pgq.prune(interval) IS $$prune: delete succeeded, dead and cancelled jobs that finished more than older_than ago.
Returns how many it deleted. Raises PQ400 for a negative or NULL interval.$$;

-- set_retention: keep finished jobs of status (succeeded, dead or cancelled) for keep,
-- NULL meaning forever. Applies always; takes effect at the next pgq.prune_expired.
-- Leaves the pgq.retention row of the status, which it returns. Raises PQ400 for another
-- status or a negative keep.
CREATE FUNCTION pgq.set_retention(status text, keep interval) RETURNS pgq.retention
LANGUAGE plpgsql AS $$
DECLARE
    r pgq.retention;
BEGIN
    IF status IS NULL OR status NOT IN ('succeeded', 'dead', 'cancelled') THEN
        RAISE EXCEPTION 'cannot set retention: status must be succeeded, dead or cancelled, not %',
                        coalesce(quote_literal(status), 'NULL')
            USING ERRCODE = 'PQ400';
    END IF;
    IF keep < interval '0' THEN
        RAISE EXCEPTION 'cannot set retention: keep must not be negative' USING ERRCODE = 'PQ400';
    END IF;
    INSERT INTO pgq.retention AS t (status, keep) VALUES (set_retention.status, keep)
        ON CONFLICT ON CONSTRAINT retention_pkey
        DO UPDATE SET keep = excluded.keep, updated_at = now()
    RETURNING * INTO r;
    RETURN r;
END
$$;
COMMENT ON FUNCTION pgq.set_retention(text, interval) IS $$set_retention: keep finished jobs of status (succeeded, dead or cancelled) for keep,
NULL meaning forever. Applies always; takes effect at the next pgq.prune_expired.
Leaves the pgq.retention row of the status, which it returns. Raises PQ400 for another
status or a negative keep.$$;

-- prune_expired: delete at most max_rows finished jobs that are older than their status's
-- retention (pgq.retention; NULL keeps forever), oldest first per status, through
-- jobs_finished_idx. Runners and coordinators call it on their safety timers, leaderless:
-- rows another caller is deleting are skipped (SKIP LOCKED), never waited on. Returns
-- how many it deleted per status (only statuses with deletions). Raises PQ400 for a
-- max_rows outside 1..10000.
CREATE FUNCTION pgq.prune_expired(max_rows integer DEFAULT 10000)
RETURNS TABLE (status text, pruned integer)
LANGUAGE plpgsql AS $$
DECLARE
    r pgq.retention;
    budget integer := max_rows;
    n integer;
BEGIN
    IF max_rows IS NULL OR max_rows NOT BETWEEN 1 AND 10000 THEN
        RAISE EXCEPTION 'cannot prune: max_rows % is out of range 1..10000', max_rows
            USING ERRCODE = 'PQ400';
    END IF;
    FOR r IN SELECT * FROM pgq.retention AS t WHERE t.keep IS NOT NULL ORDER BY t.status LOOP
        EXIT WHEN budget <= 0;
        DELETE FROM pgq.jobs AS j
         WHERE j.id = ANY (ARRAY(
               SELECT o.id FROM pgq.jobs AS o
                WHERE o.status = r.status AND o.finished_at IS NOT NULL
                  AND o.finished_at < now() - r.keep
                ORDER BY o.finished_at
                LIMIT budget
                  FOR UPDATE SKIP LOCKED));
        GET DIAGNOSTICS n = ROW_COUNT;
        IF n > 0 THEN
            status := r.status;
            pruned := n;
            budget := budget - n;
            RETURN NEXT;
        END IF;
    END LOOP;
END
$$;
COMMENT ON FUNCTION pgq.prune_expired(integer) IS $$prune_expired: delete at most max_rows finished jobs that are older than their status's
retention (pgq.retention; NULL keeps forever), oldest first per status, through
jobs_finished_idx. Runners and coordinators call it on their safety timers, leaderless:
rows another caller is deleting are skipped (SKIP LOCKED), never waited on. Returns
how many it deleted per status (only statuses with deletions). Raises PQ400 for a
max_rows outside 1..10000.$$;
