-- 0009_drain: cut what every claimed and completed job costs in Postgres (issue #5, drain).
--
-- Profile (PG 15; backend CPU of steady claim(200) + complete_many(200) calls at a 20,000
-- job backlog): the claim cost ~25 µs per job and complete_many ~26 µs. Most of a row's
-- cost is its UPDATE: a new tuple version, its WAL, the primary key entry and one partial
-- index entry. On top of that, and removed here:
--   * ~6 µs per updated row, claim and completion alike: the CHECK constraints on queue
--     and type names, which every UPDATE re-evaluates although it changes neither. Their
--     bounded repetitions ({0,47}, {1,128}) make PostgreSQL's regex engine build a large
--     automaton at every match; "+ or *, then length()" accepts the same names at a small
--     fraction of the cost;
--   * ~4 µs per completed job and ~1 µs per claimed one: the AFTER UPDATE statement
--     trigger of 0003. Declaring transition tables makes Postgres copy the old and the
--     new version of every row of every UPDATE into tuplestores (claims and heartbeats
--     included), which the trigger then joined to find the rows whose status changed. It
--     is now a row trigger whose WHEN clause is false for claims, heartbeats and
--     completions; pgq.complete and pgq.complete_many, the only ways into succeeded,
--     announce their jobs themselves, set-based (a row trigger call per completed job
--     measured slower than the statement trigger it replaced);
--   * ~2 µs per completion: the B-tree jobs_finished_at_idx, read only by pgq.prune,
--     becomes a BRIN index;
--   * complete_many ran the dependency release's UPDATE even when nothing waits on the
--     completed jobs; the release now stops after its first statement finds no dependent.
-- Measured together: claim ~19 µs, complete_many ~16 µs per job. And it tunes autovacuum
-- for a queue table, whose every row is updated two or three times in its life (below).


-- Names as in 0001, checked without bounded repetitions (same accepted names): every
-- UPDATE of a row re-checks every CHECK constraint, and these two were the dearest.
ALTER TABLE pgq.jobs
    DROP CONSTRAINT jobs_queue_name,
    DROP CONSTRAINT jobs_type_name,
    ADD CONSTRAINT jobs_queue_name CHECK (queue ~ '^[a-z][a-z0-9_]*$' AND length(queue) <= 48),
    ADD CONSTRAINT jobs_type_name CHECK (type ~ '^[A-Za-z0-9_.:-]+$' AND length(type) <= 128);


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
ALTER TABLE pgq.jobs SET (
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_insert_scale_factor = 0.01,
    autovacuum_vacuum_insert_threshold = 1000,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_analyze_threshold = 1000,
    autovacuum_vacuum_cost_delay = 0
);


-- pgq.prune: finished jobs by age. BRIN rather than a B-tree: a job's succeeded (or dead,
-- or cancelled) version is appended as it finishes, so finished_at follows the physical
-- order closely enough for block ranges, and a BRIN insert costs next to nothing where
-- the B-tree cost every completion an index insertion. Unsummarized ranges (the newest)
-- are always read, so prune stays correct whatever the order; autosummarize keeps them few.
DROP INDEX pgq.jobs_finished_at_idx;
CREATE INDEX jobs_finished_at_brin ON pgq.jobs USING brin (finished_at)
    WITH (autosummarize = on);


-- _notify_update (replaces 0003's, now FOR EACH ROW): for one updated row whose status
-- changed to queued, dead or cancelled (its trigger's WHEN clause lets no other row
-- through: claims, heartbeats and completions never call it). Leaves a pgq_<queue>
-- notification (payload '') for a row that entered queued, which Postgres folds into one
-- per queue per transaction, or a pgq_events notification {"id", "status", "queue",
-- "type"} for a row that ended dead or cancelled. Jobs that succeeded are announced by
-- pgq.complete and pgq.complete_many, the only transitions into succeeded, in the same
-- statement as their UPDATE.
CREATE OR REPLACE FUNCTION pgq._notify_update() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status = 'queued' THEN
        PERFORM pg_notify('pgq_' || NEW.queue, '');
    ELSE
        PERFORM pg_notify('pgq_events', json_build_object(
                    'id', NEW.id, 'status', NEW.status, 'queue', NEW.queue, 'type', NEW.type)::text);
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION pgq._notify_update() IS
    '_notify_update: per row that entered queued (pgq_<queue> wake-up) or ended dead/cancelled (pgq_events).';

-- No transition tables: they made every UPDATE of pgq.jobs copy all its rows, twice.
DROP TRIGGER _500_notify_update ON pgq.jobs;
CREATE TRIGGER _500_notify_update
    AFTER UPDATE ON pgq.jobs
    FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status
          AND NEW.status IN ('queued', 'dead', 'cancelled'))
    EXECUTE FUNCTION pgq._notify_update();


-- _announce_succeeded: the pgq_events notification of each job that succeeded, in id
-- order; pgq.complete and pgq.complete_many call it with the rows their UPDATE returned.
-- Applies always. Leaves one notification per row, the payload built as in _notify_update.
CREATE FUNCTION pgq._announce_succeeded(ids bigint[], queues text[], types text[])
RETURNS void
LANGUAGE sql AS $$
    SELECT count(pg_notify('pgq_events', json_build_object(
               'id', s.id, 'status', 'succeeded', 'queue', s.queue, 'type', s.type)::text))
      FROM (SELECT u.id, u.queue, u.type
              FROM unnest(ids, queues, types) AS u(id, queue, type)
             ORDER BY u.id) AS s
$$;
COMMENT ON FUNCTION pgq._announce_succeeded(bigint[], text[], text[]) IS
    '_announce_succeeded: a pgq_events notification per job that succeeded (pgq.complete, pgq.complete_many).';


-- _release_dependents_many (replaces 0004's): after jobs succeeded, queue each waiting
-- dependent whose parents have now all succeeded. Applies when parent_ids is not empty.
-- Leaves the other dependents waiting; when no waiting job depends on any of the parents
-- (the usual case) it stops after one index probe, without the UPDATE.
CREATE OR REPLACE FUNCTION pgq._release_dependents_many(parent_ids bigint[]) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF parent_ids IS NULL OR cardinality(parent_ids) = 0 THEN
        RETURN;
    END IF;
    -- Lock first, check in a second statement (as in pgq._release_dependents): the second
    -- statement's fresh snapshot sees a parent that another transaction finished meanwhile.
    PERFORM 1 FROM pgq.jobs
     WHERE depends_on && parent_ids AND status = 'waiting'
     ORDER BY id
       FOR UPDATE;
    IF NOT FOUND THEN
        -- No dependent is waiting, and none can appear before we commit: an enqueue naming
        -- one of these parents locks it FOR SHARE, so it waits for our commit and then
        -- sees the parent succeeded.
        RETURN;
    END IF;

    UPDATE pgq.jobs AS child
       SET status = 'queued', updated_at = now()
     WHERE child.depends_on && parent_ids
       AND child.status = 'waiting'
       AND NOT EXISTS (SELECT 1 FROM pgq.jobs AS p
                        WHERE p.id = ANY (child.depends_on) AND p.status <> 'succeeded');
END
$$;
COMMENT ON FUNCTION pgq._release_dependents_many(bigint[]) IS
    '_release_dependents_many: after jobs succeeded, queue their waiting dependents whose parents all succeeded.';


-- claim (replaces 0002's; same signature and contract): queued → running for up to
-- max_jobs jobs whose run_at has passed, in claim order (priority, then run_at, then id),
-- from the given queues (NULL: every queue) and optionally only of some types. Leaves each
-- claimed job with attempts + 1, worker_id, claimed_at and a lease of 1.25 ×
-- timeout_seconds. Rows locked by another transaction are skipped, never waited on, so
-- concurrent claimers never get the same job. Returns the claimed jobs in claim order,
-- nothing when nothing is due. Raises PQ400 for an empty worker_id or a max_jobs outside
-- 1..10000.
CREATE OR REPLACE FUNCTION pgq.claim(
    worker_id text,
    max_jobs integer DEFAULT 1,
    queues text[] DEFAULT NULL,
    job_types text[] DEFAULT NULL
) RETURNS SETOF pgq.jobs
LANGUAGE plpgsql AS $$
BEGIN
    IF worker_id IS NULL OR length(worker_id) NOT BETWEEN 1 AND 255 THEN
        RAISE EXCEPTION 'cannot claim: worker_id must be 1-255 characters' USING ERRCODE = 'PQ400';
    END IF;
    IF max_jobs IS NULL OR max_jobs NOT BETWEEN 1 AND 10000 THEN
        RAISE EXCEPTION 'cannot claim: max_jobs % is out of range 1..10000', max_jobs
            USING ERRCODE = 'PQ400';
    END IF;

    RETURN QUERY
    WITH candidates AS (
        -- Per queue, the first max_jobs due jobs in claim order: an ordered walk of
        -- jobs_claim_idx (queue, priority, run_at, id) that stops after max_jobs rows, so
        -- the cost does not grow with the backlog (a single query over all the queues
        -- would sort every queued job). SKIP LOCKED: a row another claimer is taking is
        -- simply not ours. With several queues up to max_jobs rows per queue are locked
        -- here and the best max_jobs of them claimed; the others are unlocked when the
        -- claiming transaction ends.
        SELECT c.id, c.priority, c.run_at
          FROM (SELECT DISTINCT unnest(coalesce(queues, ARRAY(SELECT pgq._queued_queues()))))
               AS wanted(queue)
         CROSS JOIN LATERAL (
               SELECT j.id, j.priority, j.run_at
                 FROM pgq.jobs AS j
                WHERE j.status = 'queued'
                  AND j.queue = wanted.queue
                  AND j.run_at <= now()
                  AND (job_types IS NULL OR j.type = ANY (job_types))
                ORDER BY j.priority, j.run_at, j.id
                LIMIT max_jobs
                  FOR UPDATE SKIP LOCKED) AS c
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
               updated_at = now()
         WHERE j.id = ANY (ARRAY(SELECT c.id FROM candidates AS c
                                  ORDER BY c.priority, c.run_at, c.id LIMIT max_jobs))
        RETURNING j.*
    )
    SELECT * FROM claimed AS c ORDER BY c.priority, c.run_at, c.id;
END
$$;
COMMENT ON FUNCTION pgq.claim(text, integer, text[], text[]) IS
    'claim: queued → running for up to max_jobs due jobs (priority, run_at, id), FOR UPDATE SKIP LOCKED.';


-- complete (replaces 0002's; same contract): running → succeeded. Applies when the job is
-- running, held by worker_id and, when attempt is given, on that attempt. Leaves result,
-- finished_at, the lease cleared, waiting dependents released, a pgq_events notification
-- (sent here now, not by the UPDATE trigger).
-- Raises PQ404 (no such job) or PQ409 (not running, another holder, another attempt), and
-- 0A000 inside a REPEATABLE READ transaction (see _require_fresh_snapshots).
CREATE OR REPLACE FUNCTION pgq.complete(
    job_id bigint,
    worker_id text,
    result jsonb DEFAULT NULL,
    attempt integer DEFAULT NULL
) RETURNS pgq.jobs
LANGUAGE plpgsql AS $$
DECLARE
    j pgq.jobs;
BEGIN
    UPDATE pgq.jobs AS t
       SET status = 'succeeded', result = complete.result, finished_at = now(),
           lease_expires_at = NULL, updated_at = now()
     WHERE t.id = job_id AND t.status = 'running' AND t.worker_id = complete.worker_id
       AND (attempt IS NULL OR t.attempts = attempt)
    RETURNING * INTO j;
    IF NOT FOUND THEN
        PERFORM pgq._refuse(job_id, worker_id, attempt, 'complete');
    END IF;
    PERFORM pgq._announce_succeeded(ARRAY[j.id], ARRAY[j.queue], ARRAY[j.type]);
    PERFORM pgq._release_dependents(j.id);
    RETURN j;
END
$$;
COMMENT ON FUNCTION pgq.complete(bigint, text, jsonb, integer) IS
    'complete: running → succeeded, fenced by worker_id (and attempt when given).';


-- complete_many (replaces 0004's; same contract): running → succeeded for a batch of jobs
-- held by one worker. Applies to each job that is running, held by worker_id and on the
-- given attempt (a NULL attempt skips that check, as in pgq.complete); the others are left
-- untouched and do not fail the batch: a job cancelled, expired or claimed again since is
-- simply not completed. Leaves each completed job with its result, finished_at, the lease
-- cleared, its waiting dependents released and a pgq_events notification (sent here, in
-- id order). results is one JSON array holding each job's result in the order of job_ids
-- (a JSON null, or no results at all, stores NULL, as pgq.complete does).
-- Returns one row per input job, in input order: (job_id, completed, status), status
-- being the job's status after the call (NULL for a job that does not exist).
-- Raises PQ400 when worker_id is empty, job_ids holds a NULL or more than 10000 ids, or
-- attempts / results do not have one entry per job.
CREATE OR REPLACE FUNCTION pgq.complete_many(
    worker_id text,
    job_ids bigint[],
    attempts integer[],
    results jsonb DEFAULT NULL
) RETURNS TABLE (job_id bigint, completed boolean, status text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    done_ids bigint[];
    done_queues text[];
    done_types text[];
BEGIN
    IF worker_id IS NULL OR length(worker_id) NOT BETWEEN 1 AND 255 THEN
        RAISE EXCEPTION 'cannot complete: worker_id must be 1-255 characters'
            USING ERRCODE = 'PQ400';
    END IF;
    IF job_ids IS NULL OR cardinality(job_ids) > 10000 THEN
        RAISE EXCEPTION 'cannot complete: job_ids must be an array of at most 10000 ids'
            USING ERRCODE = 'PQ400';
    END IF;
    IF cardinality(attempts) IS DISTINCT FROM cardinality(job_ids) THEN
        RAISE EXCEPTION 'cannot complete: attempts must have one entry per job (% ids, % attempts)',
                        cardinality(job_ids), coalesce(cardinality(attempts)::text, 'NULL')
            USING ERRCODE = 'PQ400';
    END IF;
    IF results IS NOT NULL AND (jsonb_typeof(results) <> 'array'
                                OR jsonb_array_length(results) <> cardinality(job_ids)) THEN
        RAISE EXCEPTION 'cannot complete: results must be a JSON array with one entry per job (% ids)',
                        cardinality(job_ids)
            USING ERRCODE = 'PQ400';
    END IF;
    IF array_position(job_ids, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'cannot complete: job_ids must not contain NULL' USING ERRCODE = 'PQ400';
    END IF;

    WITH input AS (
        SELECT u.id, u.attempt,
               nullif(complete_many.results -> (u.ord - 1)::integer, 'null'::jsonb) AS result
          FROM unnest(complete_many.job_ids, complete_many.attempts) WITH ORDINALITY
               AS u(id, attempt, ord)
    ), updated AS (
        -- The fence of pgq.complete, per row: a row that fails it is skipped, not refused.
        UPDATE pgq.jobs AS t
           SET status = 'succeeded', result = i.result, finished_at = now(),
               lease_expires_at = NULL, updated_at = now()
          FROM input AS i
         WHERE t.id = i.id
           AND t.status = 'running'
           AND t.worker_id = complete_many.worker_id
           AND (i.attempt IS NULL OR t.attempts = i.attempt)
        RETURNING t.id, t.queue, t.type
    )
    SELECT coalesce(array_agg(u.id), '{}'), array_agg(u.queue), array_agg(u.type)
      INTO done_ids, done_queues, done_types
      FROM updated AS u;

    IF cardinality(done_ids) > 0 THEN
        PERFORM pgq._announce_succeeded(done_ids, done_queues, done_types);
        PERFORM pgq._release_dependents_many(done_ids);
    END IF;

    IF cardinality(done_ids) = cardinality(complete_many.job_ids) THEN
        -- the usual case: every job completed, nothing to look up
        RETURN QUERY
        SELECT u.id, true, 'succeeded'::text
          FROM unnest(complete_many.job_ids) WITH ORDINALITY AS u(id, ord)
         ORDER BY u.ord;
    ELSE
        RETURN QUERY
        SELECT u.id, d.id IS NOT NULL, j.status
          FROM unnest(complete_many.job_ids) WITH ORDINALITY AS u(id, ord)
          LEFT JOIN (SELECT DISTINCT unnest(done_ids) AS id) AS d ON d.id = u.id
          LEFT JOIN pgq.jobs AS j ON j.id = u.id
         ORDER BY u.ord;
    END IF;
END
$$;
COMMENT ON FUNCTION pgq.complete_many(text, bigint[], integer[], jsonb) IS
    'complete_many: running → succeeded for a batch held by worker_id, each fenced like complete; jobs that fail the fence are skipped, not refused.';
