-- 0004_runner: what a busy runner needs on top of the one-job transitions.
-- Part of the baseline (0001-0004).
--
-- A runner that finishes thousands of jobs a second cannot afford one transaction (and one
-- WAL flush) per completion, so it acknowledges its finished jobs in batches with
-- pgq.complete_many. It never claims in the same statement: acknowledge first, then claim,
-- each its own call (a combined ack-and-claim statement deadlocked in a peer system). When
-- it has nothing to claim it sleeps until pgq.next_due (or a notification, 0003).


-- _release_dependents_many: after jobs succeeded (pgq.complete_many), queue each waiting
-- dependent whose parents have now all succeeded; the set-based twin of
-- pgq._release_dependents, so a batch of completions costs two statements, not two per
-- job. Applies when parent_ids is not empty. Leaves the other dependents waiting; when no
-- waiting job depends on any of the parents (the usual case) it stops after one index
-- probe, without the UPDATE. Raises nothing.
CREATE FUNCTION pgq._release_dependents_many(parent_ids bigint[]) RETURNS void
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
COMMENT ON FUNCTION pgq._release_dependents_many(bigint[]) IS $$_release_dependents_many: after jobs succeeded (pgq.complete_many), queue each waiting
dependent whose parents have now all succeeded; the set-based twin of
pgq._release_dependents, so a batch of completions costs two statements, not two per
job. Applies when parent_ids is not empty. Leaves the other dependents waiting; when no
waiting job depends on any of the parents (the usual case) it stops after one index
probe, without the UPDATE. Raises nothing.$$;

-- complete_each: running → succeeded for a batch of jobs, each held by its own worker
-- (worker_ids[i] holds job_ids[i]): the coordinator folds concurrent single completions of
-- many HTTP workers into one call, and pgq.complete_many is the one-worker case.
-- Applies to each job that is running, held by its worker, on the given attempt (a NULL
-- attempt skips that check, as in pgq.complete) and, when lease_tokens are given, under the
-- job's lease token (a NULL entry skips that check); the others are left untouched and do not
-- fail the batch: a job cancelled, expired or claimed again since is simply not completed.
-- Leaves each completed job with its result, finished_at, the lease and token cleared, its waiting
-- dependents released and a pgq_events notification (sent here, in id order). results is
-- one JSON array holding each job's result in the order of job_ids (a JSON null, or no
-- results at all, stores NULL, as pgq.complete does); one jsonb value rather than a
-- jsonb[], so that results that are themselves arrays cannot be mistaken for array
-- dimensions by a driver.
-- Returns one row per input job, in input order: (job_id, completed, status), status
-- being the job's status after the call (NULL for a job that does not exist).
-- Raises PQ400 when job_ids holds a NULL or more than 10000 ids, a worker_id is empty, or
-- worker_ids / attempts / results / lease_tokens do not have one entry per job.
CREATE FUNCTION pgq.complete_each(
    worker_ids text[],
    job_ids bigint[],
    attempts integer[],
    results jsonb DEFAULT NULL,
    lease_tokens uuid[] DEFAULT NULL
) RETURNS TABLE (job_id bigint, completed boolean, status text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    done_ids bigint[];
    done_queues text[];
    done_types text[];
BEGIN
    IF job_ids IS NULL OR cardinality(job_ids) > 10000 THEN
        RAISE EXCEPTION 'cannot complete: job_ids must be an array of at most 10000 ids'
            USING ERRCODE = 'PQ400';
    END IF;
    IF cardinality(worker_ids) IS DISTINCT FROM cardinality(job_ids) THEN
        RAISE EXCEPTION 'cannot complete: worker_ids must have one entry per job (% ids, % workers)',
                        cardinality(job_ids), coalesce(cardinality(worker_ids)::text, 'NULL')
            USING ERRCODE = 'PQ400';
    END IF;
    IF EXISTS (SELECT 1 FROM unnest(worker_ids) AS w(id)
                WHERE w.id IS NULL OR length(w.id) NOT BETWEEN 1 AND 255) THEN
        RAISE EXCEPTION 'cannot complete: worker_id must be 1-255 characters'
            USING ERRCODE = 'PQ400';
    END IF;
    IF cardinality(attempts) IS DISTINCT FROM cardinality(job_ids) THEN
        RAISE EXCEPTION 'cannot complete: attempts must have one entry per job (% ids, % attempts)',
                        cardinality(job_ids), coalesce(cardinality(attempts)::text, 'NULL')
            USING ERRCODE = 'PQ400';
    END IF;
    IF lease_tokens IS NOT NULL AND cardinality(lease_tokens) <> cardinality(job_ids) THEN
        RAISE EXCEPTION 'cannot complete: lease_tokens must have one entry per job (% ids, % tokens)',
                        cardinality(job_ids), cardinality(lease_tokens)
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
        SELECT u.id, u.worker_id, u.attempt, u.lease_token,
               nullif(complete_each.results -> (u.ord - 1)::integer, 'null'::jsonb) AS result
          FROM unnest(complete_each.job_ids, complete_each.worker_ids, complete_each.attempts,
                      complete_each.lease_tokens)
               WITH ORDINALITY AS u(id, worker_id, attempt, lease_token, ord)
    ), updated AS (
        -- The fence of pgq.complete, per row: a row that fails it is skipped, not refused.
        -- "Running" is written lease_expires_at IS NOT NULL so that each job is found by
        -- its primary key, whatever the statistics say (see jobs_lease_idx in 0001).
        UPDATE pgq.jobs AS t
           SET status = 'succeeded', result = i.result, finished_at = now(),
               lease_expires_at = NULL, lease_token = NULL, updated_at = now()
          FROM input AS i
         WHERE t.id = i.id
           AND t.lease_expires_at IS NOT NULL
           AND t.worker_id = i.worker_id
           AND (i.attempt IS NULL OR t.attempts = i.attempt)
           AND (i.lease_token IS NULL OR t.lease_token = i.lease_token)
        RETURNING t.id, t.queue, t.type
    )
    SELECT coalesce(array_agg(u.id), '{}'), array_agg(u.queue), array_agg(u.type)
      INTO done_ids, done_queues, done_types
      FROM updated AS u;

    IF cardinality(done_ids) > 0 THEN
        PERFORM pgq._announce_succeeded(done_ids, done_queues, done_types);
        PERFORM pgq._release_dependents_many(done_ids);
    END IF;

    IF cardinality(done_ids) = cardinality(complete_each.job_ids) THEN
        -- the usual case: every job completed, nothing to look up
        RETURN QUERY
        SELECT u.id, true, 'succeeded'::text
          FROM unnest(complete_each.job_ids) WITH ORDINALITY AS u(id, ord)
         ORDER BY u.ord;
    ELSE
        RETURN QUERY
        SELECT u.id, d.id IS NOT NULL, j.status
          FROM unnest(complete_each.job_ids) WITH ORDINALITY AS u(id, ord)
          LEFT JOIN (SELECT DISTINCT unnest(done_ids) AS id) AS d ON d.id = u.id
          LEFT JOIN pgq.jobs AS j ON j.id = u.id
         ORDER BY u.ord;
    END IF;
END
$$;
COMMENT ON FUNCTION pgq.complete_each(text[], bigint[], integer[], jsonb, uuid[]) IS $$complete_each: running → succeeded for a batch of jobs, each held by its own worker
(worker_ids[i] holds job_ids[i]): the coordinator folds concurrent single completions of
many HTTP workers into one call, and pgq.complete_many is the one-worker case.
Applies to each job that is running, held by its worker, on the given attempt (a NULL
attempt skips that check, as in pgq.complete) and, when lease_tokens are given, under the
job's lease token (a NULL entry skips that check); the others are left untouched and do not
fail the batch: a job cancelled, expired or claimed again since is simply not completed.
Leaves each completed job with its result, finished_at, the lease and token cleared, its waiting
dependents released and a pgq_events notification (sent here, in id order). results is
one JSON array holding each job's result in the order of job_ids (a JSON null, or no
results at all, stores NULL, as pgq.complete does); one jsonb value rather than a
jsonb[], so that results that are themselves arrays cannot be mistaken for array
dimensions by a driver.
Returns one row per input job, in input order: (job_id, completed, status), status
being the job's status after the call (NULL for a job that does not exist).
Raises PQ400 when job_ids holds a NULL or more than 10000 ids, a worker_id is empty, or
worker_ids / attempts / results / lease_tokens do not have one entry per job.$$;

-- complete_many: running → succeeded for a batch of jobs held by one worker: pgq.complete_each
-- with worker_id as every job's holder (the fences, what it leaves and returns are that
-- function's). A runner acknowledges its finished jobs with it.
-- Raises PQ400 when worker_id is empty, and what pgq.complete_each raises.
CREATE FUNCTION pgq.complete_many(
    worker_id text,
    job_ids bigint[],
    attempts integer[],
    results jsonb DEFAULT NULL,
    lease_tokens uuid[] DEFAULT NULL
) RETURNS TABLE (job_id bigint, completed boolean, status text)
LANGUAGE plpgsql AS $$
BEGIN
    IF worker_id IS NULL OR length(worker_id) NOT BETWEEN 1 AND 255 THEN
        RAISE EXCEPTION 'cannot complete: worker_id must be 1-255 characters'
            USING ERRCODE = 'PQ400';
    END IF;
    RETURN QUERY
    SELECT * FROM pgq.complete_each(array_fill(worker_id, ARRAY[coalesce(cardinality(job_ids), 0)]),
                                    job_ids, attempts, results, lease_tokens);
END
$$;
COMMENT ON FUNCTION pgq.complete_many(text, bigint[], integer[], jsonb, uuid[]) IS $$complete_many: running → succeeded for a batch of jobs held by one worker: pgq.complete_each
with worker_id as every job's holder (the fences, what it leaves and returns are that
function's). A runner acknowledges its finished jobs with it.
Raises PQ400 when worker_id is empty, and what pgq.complete_each raises.$$;

-- claim_many: queued → running for several claimers at once, each getting what its own
-- pgq.claim(worker_ids[k], max_jobs[k], queues, job_types) would: the coordinator folds
-- concurrent POST /jobs/claim requests with the same queues and types into one call.
-- One pgq.claim of sum(max_jobs) jobs (one walk of jobs_claim_idx, flow control counted
-- once for all, a lease token minted per job), held by worker_ids[1]; then the jobs are
-- dealt out in claim order, the first max_jobs[1] to worker_ids[1], the next max_jobs[2] to
-- worker_ids[2], and so on, and each job dealt to another worker gets that worker_id (its
-- lease, token and attempt stay as claimed). A claim that meets a limit or an emptying
-- queue returns fewer jobs: the last claimers get fewer or none, never an error.
-- Applies like pgq.claim. Leaves what pgq.claim leaves, each job held by its own claimer.
-- Returns the claimed jobs, in claim order (a caller splits them by worker_id, in the
-- order of worker_ids). Raises PQ400 for an empty list, lists of different lengths, an
-- empty worker_id or a max_jobs outside 1..10000 (any entry) or totalling more than 10000,
-- and what pgq.claim raises.
CREATE FUNCTION pgq.claim_many(
    worker_ids text[],
    max_jobs integer[],
    queues text[] DEFAULT NULL,
    job_types text[] DEFAULT NULL
) RETURNS SETOF pgq.jobs
LANGUAGE plpgsql AS $$
DECLARE
    total bigint;
    ids bigint[];
    holders text[];
BEGIN
    IF coalesce(cardinality(worker_ids), 0) = 0
       OR cardinality(max_jobs) IS DISTINCT FROM cardinality(worker_ids) THEN
        RAISE EXCEPTION 'cannot claim: worker_ids and max_jobs must be non-empty lists of one length'
            USING ERRCODE = 'PQ400';
    END IF;
    IF EXISTS (SELECT 1 FROM unnest(worker_ids) AS w(id)
                WHERE w.id IS NULL OR length(w.id) NOT BETWEEN 1 AND 255) THEN
        RAISE EXCEPTION 'cannot claim: every worker_id must be 1-255 characters'
            USING ERRCODE = 'PQ400';
    END IF;
    SELECT sum(m.n) INTO total FROM unnest(max_jobs) AS m(n);
    IF EXISTS (SELECT 1 FROM unnest(max_jobs) AS m(n) WHERE m.n IS NULL OR m.n NOT BETWEEN 1 AND 10000)
       OR total > 10000 THEN
        RAISE EXCEPTION 'cannot claim: every max_jobs must be in 1..10000, together at most 10000'
            USING ERRCODE = 'PQ400';
    END IF;

    ids := ARRAY(SELECT c.id FROM pgq.claim(worker_ids[1], total::integer, queues, job_types)
                                  WITH ORDINALITY AS c
                  ORDER BY c.ordinality);
    -- Deal the jobs out in one UPDATE: the holder of each claim-order position, one per job
    -- asked for, request by request. "j.id = ANY (ids)" finds the jobs by primary key (a
    -- join alone could be planned as a scan of the table when the statistics are off).
    holders := ARRAY(SELECT worker_ids[k]
                       FROM generate_subscripts(worker_ids, 1) AS k
                      CROSS JOIN LATERAL generate_series(1, max_jobs[k])
                      ORDER BY k
                      LIMIT cardinality(ids));
    UPDATE pgq.jobs AS j SET worker_id = d.holder
      FROM unnest(ids, holders) AS d(id, holder)
     WHERE j.id = ANY (ids) AND j.id = d.id AND d.holder <> worker_ids[1];

    RETURN QUERY
    SELECT j.* FROM pgq.jobs AS j WHERE j.id = ANY (ids) ORDER BY j.priority, j.run_at, j.id;
END
$$;
COMMENT ON FUNCTION pgq.claim_many(text[], integer[], text[], text[]) IS $$claim_many: queued → running for several claimers at once, each getting what its own
pgq.claim(worker_ids[k], max_jobs[k], queues, job_types) would: the coordinator folds
concurrent POST /jobs/claim requests with the same queues and types into one call.
One pgq.claim of sum(max_jobs) jobs (one walk of jobs_claim_idx, flow control counted
once for all, a lease token minted per job), held by worker_ids[1]; then the jobs are
dealt out in claim order, the first max_jobs[1] to worker_ids[1], the next max_jobs[2] to
worker_ids[2], and so on, and each job dealt to another worker gets that worker_id (its
lease, token and attempt stay as claimed). A claim that meets a limit or an emptying
queue returns fewer jobs: the last claimers get fewer or none, never an error.
Applies like pgq.claim. Leaves what pgq.claim leaves, each job held by its own claimer.
Returns the claimed jobs, in claim order (a caller splits them by worker_id, in the
order of worker_ids). Raises PQ400 for an empty list, lists of different lengths, an
empty worker_id or a max_jobs outside 1..10000 (any entry) or totalling more than 10000,
and what pgq.claim raises.$$;

-- next_due: what a runner sleeps until when it has nothing to claim: the earliest time a
-- queued job it could claim is due, from the given queues (NULL: every queue) and of the
-- given types (NULL when none), and the earliest lease expiry of any running job (NULL when
-- none), after which pgq.expire_leases has work. Flow control counts: a paused queue, and a
-- queue whose running jobs fill its concurrency, offer nothing (pgq.resume and a freed slot
-- notify pgq_<queue>); the jobs of a key whose running jobs fill key_concurrency are
-- skipped; a queue out of rate tokens offers its jobs from the moment its next token is
-- due. Runners call it whenever they go idle, so it reads the first entry of jobs_claim_idx
-- per queue and priority (pgq._queued_priorities), never the whole backlog (in a
-- key-limited queue it steps over the due jobs of full keys), and starts each priority at
-- the first queued job the hop found, so index entries of jobs that left queued (until
-- VACUUM) are stepped over once, not twice. Leaves nothing behind; raises nothing.
CREATE FUNCTION pgq.next_due(queues text[] DEFAULT NULL, job_types text[] DEFAULT NULL)
RETURNS TABLE (next_run_at timestamptz, next_lease_expiry timestamptz)
LANGUAGE sql STABLE AS $$
    WITH wanted AS (
        SELECT w.queue, q.paused, q.concurrency, q.key_concurrency, q.rate, q.tokens, q.tokens_at
          FROM unnest(coalesce(queues, ARRAY(SELECT q.queue
                                               FROM pgq._queued_queues() AS q(queue)))) AS w(queue)
          LEFT JOIN pgq.queues AS q ON q.queue = w.queue
    ), open AS (
        SELECT w.queue,
               CASE WHEN w.key_concurrency IS NOT NULL THEN
                   ARRAY(SELECT r.concurrency_key FROM pgq.jobs AS r
                          WHERE r.status = 'running' AND r.holds_slot AND r.queue = w.queue
                            AND r.concurrency_key IS NOT NULL
                          GROUP BY r.concurrency_key
                         HAVING count(*) >= w.key_concurrency) END AS blocked,
               CASE WHEN w.tokens < 1 THEN
                   w.tokens_at + make_interval(secs => (1 - w.tokens) / w.rate) END AS token_at
          FROM wanted AS w
         WHERE w.paused IS NOT TRUE
           AND (w.concurrency IS NULL
                OR (SELECT count(*) FROM pgq.jobs AS r
                     WHERE r.status = 'running' AND r.holds_slot AND r.queue = w.queue)
                   < w.concurrency)
    )
    SELECT (SELECT min(greatest(first.run_at, o.token_at))
              FROM open AS o
             CROSS JOIN LATERAL pgq._queued_priorities(o.queue) AS p(priority)
             CROSS JOIN LATERAL (
                   SELECT j.run_at FROM pgq.jobs AS j
                    WHERE j.status = 'queued' AND j.queue = o.queue AND j.priority = p.priority
                      AND (j.run_at, j.id) >= (p.run_at, p.id)
                      AND (job_types IS NULL OR j.type = ANY (job_types))
                      AND (o.blocked IS NULL OR j.concurrency_key IS NULL
                           OR NOT (j.concurrency_key = ANY (o.blocked)))
                    ORDER BY j.run_at, j.id
                    LIMIT 1) AS first),
           (SELECT min(j.lease_expires_at) FROM pgq.jobs AS j WHERE j.status = 'running')
$$;
COMMENT ON FUNCTION pgq.next_due(text[], text[]) IS $$next_due: what a runner sleeps until when it has nothing to claim: the earliest time a
queued job it could claim is due, from the given queues (NULL: every queue) and of the
given types (NULL when none), and the earliest lease expiry of any running job (NULL when
none), after which pgq.expire_leases has work. Flow control counts: a paused queue, and a
queue whose running jobs fill its concurrency, offer nothing (pgq.resume and a freed slot
notify pgq_<queue>); the jobs of a key whose running jobs fill key_concurrency are
skipped; a queue out of rate tokens offers its jobs from the moment its next token is
due. Runners call it whenever they go idle, so it reads the first entry of jobs_claim_idx
per queue and priority (pgq._queued_priorities), never the whole backlog (in a
key-limited queue it steps over the due jobs of full keys), and starts each priority at
the first queued job the hop found, so index entries of jobs that left queued (until
VACUUM) are stepped over once, not twice. Leaves nothing behind; raises nothing.$$;
