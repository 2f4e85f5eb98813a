-- 0090_flow_control: pause, concurrency limits (per queue and per concurrency_key) and a
-- token-bucket rate per queue, enforced inside pgq.claim so that they bind every claimer
-- (asyncio runners, HTTP runners, psql).
--
-- Leaves behind:
--   * pgq.queues: one row per queue that has settings; a queue without a row is unpaused
--     and unlimited. tokens / tokens_at hold the token bucket of a queue with a rate.
--   * pgq.jobs.concurrency_key (set at enqueue) and pgq.jobs.holds_slot (internal: the job
--     was claimed while its queue had a concurrency or key limit, so it occupies a slot).
--     A slot is the running job row itself: it survives kill -9 of its runner and frees
--     when the job leaves `running` (complete, fail, cancel, release, lease expiry).
--   * pgq.pause, pgq.resume, pgq.set_limits; pgq.enqueue and the bulk paths take
--     concurrency_key; pgq.claim honours the settings; pgq.next_due knows them, so a runner
--     held back by a limit sleeps until a slot frees (pgq_<queue> notification, sent by
--     _500_notify_slot_freed) or the next rate token is due, never in a fixed poll.
--
-- Cost: a claim from queues without settings does what it did before plus one probe of
-- pgq.queues (empty for most installations). A claim touching a queue with settings locks
-- that queue's pgq.queues row until its transaction ends, so the claims of one limited
-- queue run one at a time: that is what makes the running count it reads exact.


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


ALTER TABLE pgq.jobs
    ADD COLUMN concurrency_key text,
    ADD COLUMN holds_slot boolean NOT NULL DEFAULT false,
    ADD CONSTRAINT jobs_concurrency_key_length CHECK (length(concurrency_key) BETWEEN 1 AND 256);

COMMENT ON COLUMN pgq.jobs.concurrency_key IS
    'jobs with one key share the key_concurrency limit of their queue (NULL: not limited by key)';
COMMENT ON COLUMN pgq.jobs.holds_slot IS
    'internal: claimed while the queue had a concurrency or key limit; a running job with it '
    'occupies a slot, and leaving running notifies pgq_<queue>';

-- The running count of a limited queue (and of each key), read by every limited claim.
-- Partial on holds_slot: claims from unlimited queues add no entry here.
CREATE INDEX jobs_slots_idx ON pgq.jobs (queue, concurrency_key)
    WHERE status = 'running' AND holds_slot;


-- _notify_slot_freed: a job that held a slot left running (completed, failed, cancelled,
-- released, expired). Applies when its queue still has a concurrency limit, or a key limit
-- and the job a key, and is not paused. Leaves a pgq_<queue> notification, so a runner held
-- back by the limit claims at once.
CREATE FUNCTION pgq._notify_slot_freed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM pgq.queues AS q
                WHERE q.queue = OLD.queue AND NOT q.paused
                  AND (q.concurrency IS NOT NULL
                       OR (q.key_concurrency IS NOT NULL AND OLD.concurrency_key IS NOT NULL))) THEN
        PERFORM pg_notify('pgq_' || OLD.queue, '');
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION pgq._notify_slot_freed() IS
    '_notify_slot_freed: a job holding a slot of a limited queue left running: notify pgq_<queue>.';

-- WHEN on holds_slot: completions in unlimited queues never call the function.
CREATE TRIGGER _500_notify_slot_freed
    AFTER UPDATE ON pgq.jobs
    FOR EACH ROW
    WHEN (OLD.status = 'running' AND NEW.status <> 'running' AND OLD.holds_slot)
    EXECUTE FUNCTION pgq._notify_slot_freed();


-- _check_limit: raises PQ400 naming the argument unless value is NULL or positive.
CREATE FUNCTION pgq._check_limit(name text, value numeric) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF value IS NOT NULL AND value <= 0 THEN
        RAISE EXCEPTION 'cannot set limits: % must be positive or NULL (no limit), not %', name, value
            USING ERRCODE = 'PQ400';
    END IF;
END
$$;
COMMENT ON FUNCTION pgq._check_limit(text, numeric) IS
    '_check_limit: raises PQ400 naming the argument unless it is NULL or positive.';


-- pause: a queue stops handing out jobs. Applies to any valid queue name (with or without
-- jobs). Leaves the queue's pgq.queues row with paused = true (created when missing): no
-- claim path returns its jobs until pgq.resume; enqueue, complete, fail and cancel go on,
-- running jobs finish. Idempotent. Raises PQ400 for an invalid queue name.
CREATE FUNCTION pgq.pause(queue text) RETURNS pgq.queues
LANGUAGE plpgsql AS $$
DECLARE
    q pgq.queues;
BEGIN
    PERFORM pgq._check_queues(ARRAY[pause.queue]);
    INSERT INTO pgq.queues AS t (queue, paused) VALUES (pause.queue, true)
        ON CONFLICT ON CONSTRAINT queues_pkey
        DO UPDATE SET paused = true, updated_at = now()
    RETURNING * INTO q;
    RETURN q;
END
$$;
COMMENT ON FUNCTION pgq.pause(text) IS
    'pause: no claim hands out jobs of the queue until pgq.resume; survives restarts.';


-- resume: a paused queue hands out jobs again. Applies to any valid queue name. Leaves
-- paused = false (a queue without a row stays without one) and a pgq_<queue> notification
-- so idle runners claim at once. Returns the queue's settings. Idempotent. Raises PQ400 for
-- an invalid queue name.
CREATE FUNCTION pgq.resume(queue text) RETURNS pgq.queues
LANGUAGE plpgsql AS $$
DECLARE
    q pgq.queues;
BEGIN
    PERFORM pgq._check_queues(ARRAY[resume.queue]);
    UPDATE pgq.queues AS t SET paused = false, updated_at = now()
     WHERE t.queue = resume.queue
    RETURNING * INTO q;
    IF NOT FOUND THEN
        q := ROW(resume.queue, false, NULL, NULL, NULL, NULL, now(), NULL, NULL)::pgq.queues;
    END IF;
    PERFORM pg_notify('pgq_' || resume.queue, '');
    RETURN q;
END
$$;
COMMENT ON FUNCTION pgq.resume(text) IS
    'resume: the queue hands out jobs again; notifies pgq_<queue> so idle runners start at once.';


-- set_limits: replace all four limits of a queue at once (NULL: no limit). Applies to any
-- valid queue name. Leaves the queue's row (created when missing; pause state kept) with
-- the given concurrency, key_concurrency, rate (claims per second) and burst (default
-- ceil(rate)); a new rate starts with a full bucket, a changed one keeps the tokens it has
-- (at most the new burst). Running jobs of the queue occupy slots from now on, and a
-- pgq_<queue> notification wakes runners in case the limits were loosened.
-- Raises PQ400 for an invalid queue name, a value <= 0, burst without rate, or a rate
-- above 1,000,000 per second.
CREATE FUNCTION pgq.set_limits(
    queue text,
    concurrency integer DEFAULT NULL,
    key_concurrency integer DEFAULT NULL,
    rate numeric DEFAULT NULL,
    burst integer DEFAULT NULL
) RETURNS pgq.queues
LANGUAGE plpgsql AS $$
DECLARE
    q pgq.queues;
    new_burst integer;
BEGIN
    PERFORM pgq._check_queues(ARRAY[set_limits.queue]);
    PERFORM pgq._check_limit('concurrency', set_limits.concurrency);
    PERFORM pgq._check_limit('key_concurrency', set_limits.key_concurrency);
    PERFORM pgq._check_limit('rate', set_limits.rate);
    PERFORM pgq._check_limit('burst', set_limits.burst);
    IF set_limits.rate > 1000000 THEN
        RAISE EXCEPTION 'cannot set limits: rate % is above 1000000 per second', set_limits.rate
            USING ERRCODE = 'PQ400';
    END IF;
    IF set_limits.burst IS NOT NULL AND set_limits.rate IS NULL THEN
        RAISE EXCEPTION 'cannot set limits: burst needs a rate'
            USING ERRCODE = 'PQ400', HINT = 'give rate too, or leave burst NULL';
    END IF;
    new_burst := CASE WHEN set_limits.rate IS NOT NULL
                      THEN coalesce(set_limits.burst, ceil(set_limits.rate)::integer) END;

    INSERT INTO pgq.queues AS t (queue, concurrency, key_concurrency, rate, burst, tokens, tokens_at)
    VALUES (set_limits.queue, set_limits.concurrency, set_limits.key_concurrency, set_limits.rate,
            new_burst, CASE WHEN new_burst IS NOT NULL THEN new_burst END,
            CASE WHEN new_burst IS NOT NULL THEN clock_timestamp() END)
        ON CONFLICT ON CONSTRAINT queues_pkey DO UPDATE
       SET concurrency = excluded.concurrency,
           key_concurrency = excluded.key_concurrency,
           rate = excluded.rate,
           burst = excluded.burst,
           tokens = CASE WHEN excluded.rate IS NULL THEN NULL
                         WHEN t.rate IS NULL THEN excluded.tokens
                         ELSE least(t.tokens, excluded.burst) END,
           tokens_at = CASE WHEN excluded.rate IS NULL THEN NULL
                            WHEN t.rate IS NULL THEN excluded.tokens_at
                            ELSE t.tokens_at END,
           updated_at = now()
    RETURNING * INTO q;

    IF q.concurrency IS NOT NULL OR q.key_concurrency IS NOT NULL THEN
        -- jobs claimed before the limit: they run, and count, until they finish
        UPDATE pgq.jobs AS j SET holds_slot = true
         WHERE j.queue = set_limits.queue AND j.status = 'running' AND NOT j.holds_slot;
    END IF;
    PERFORM pg_notify('pgq_' || set_limits.queue, '');
    RETURN q;
END
$$;
COMMENT ON FUNCTION pgq.set_limits(text, integer, integer, numeric, integer) IS
    'set_limits: set concurrency, key_concurrency, rate and burst of a queue at once (NULL = no limit).';


-- _pick_by_key: for pgq.claim, up to allow due queued jobs of a queue with a key limit, in
-- claim order, such that no key ends up with more than key_concurrency running jobs.
-- Applies while the caller holds the queue's pgq.queues row lock (so no other limited
-- claim of the queue runs). Leaves the picked rows locked FOR UPDATE. Jobs of one key are
-- picked in claim order: once a key is full, or its next job is locked by another
-- transaction (skipped), none of its later jobs is picked. Cost: the walk of
-- jobs_claim_idx steps over the queued jobs of full keys, so a long run of one full key's
-- jobs at the head of the queue is read on every claim.
CREATE FUNCTION pgq._pick_by_key(queue text, key_concurrency integer, allow integer,
                                 job_types text[])
RETURNS bigint[]
LANGUAGE plpgsql AS $$
DECLARE
    running jsonb;
    blocked text[];
    taken bigint[] := '{}';
    r record;
    n integer;
    restart boolean;
    last_priority integer := -2147483648;
    last_run_at timestamptz := '-infinity';
    last_id bigint := 0;
BEGIN
    SELECT coalesce(jsonb_object_agg(s.k, s.c), '{}') INTO running
      FROM (SELECT j.concurrency_key AS k, count(*) AS c
              FROM pgq.jobs AS j
             WHERE j.status = 'running' AND j.holds_slot AND j.queue = _pick_by_key.queue
               AND j.concurrency_key IS NOT NULL
             GROUP BY j.concurrency_key) AS s;
    blocked := ARRAY(SELECT e.key FROM jsonb_each_text(running) AS e
                      WHERE e.value::integer >= key_concurrency);
    LOOP
        restart := false;
        -- Keys that filled up leave the walk through `blocked`: the query restarts after
        -- the last job seen, instead of stepping over their later jobs one by one.
        FOR r IN SELECT j.id, j.concurrency_key, j.priority, j.run_at
                   FROM pgq.jobs AS j
                  WHERE j.status = 'queued' AND j.queue = _pick_by_key.queue
                    AND j.run_at <= now()
                    AND (job_types IS NULL OR j.type = ANY (job_types))
                    AND (j.concurrency_key IS NULL OR NOT (j.concurrency_key = ANY (blocked)))
                    AND (j.priority, j.run_at, j.id) > (last_priority, last_run_at, last_id)
                  ORDER BY j.priority, j.run_at, j.id LOOP
            last_priority := r.priority;
            last_run_at := r.run_at;
            last_id := r.id;
            PERFORM 1 FROM pgq.jobs AS j WHERE j.id = r.id AND j.status = 'queued'
                FOR UPDATE SKIP LOCKED;
            IF NOT FOUND THEN
                -- taken or changed by another transaction: its key's later jobs must not
                -- overtake it
                IF r.concurrency_key IS NOT NULL THEN
                    blocked := blocked || r.concurrency_key;
                    restart := true;
                    EXIT;
                END IF;
                CONTINUE;
            END IF;
            taken := taken || r.id;
            EXIT WHEN cardinality(taken) >= allow;
            IF r.concurrency_key IS NOT NULL THEN
                n := coalesce((running ->> r.concurrency_key)::integer, 0) + 1;
                running := jsonb_set(running, ARRAY[r.concurrency_key], to_jsonb(n));
                IF n >= key_concurrency THEN
                    blocked := blocked || r.concurrency_key;
                    restart := true;
                    EXIT;
                END IF;
            END IF;
        END LOOP;
        EXIT WHEN NOT restart OR cardinality(taken) >= allow;
    END LOOP;
    RETURN taken;
END
$$;
COMMENT ON FUNCTION pgq._pick_by_key(text, integer, integer, text[]) IS
    '_pick_by_key: for pgq.claim, due jobs of a key-limited queue in claim order, at most key_concurrency running per key.';


-- _claim_limited: pgq.claim when some wanted queue has settings (ruled: those queues).
-- Applies after pgq.claim validated its arguments. Locks the ruled queues' rows in name
-- order, then per queue: nothing from a paused queue; at most concurrency minus the
-- running jobs with a slot; at most the whole tokens of the bucket (refilled on the
-- database clock first); per key as _pick_by_key. Queues without settings are claimed as
-- by pgq.claim's fast path. Leaves the claimed jobs running (holds_slot set in queues
-- with a concurrency or key limit, claimed_at on the clock the bucket was read at) and
-- one token spent per claimed job. Returns them in claim order. Raises 0A000 in a
-- REPEATABLE READ transaction for a limited queue: its old snapshot would miss claims
-- that committed since, and the count would be wrong.
CREATE FUNCTION pgq._claim_limited(worker_id text, max_jobs integer, wanted text[],
                                   ruled text[], job_types text[])
RETURNS SETOF pgq.jobs
LANGUAGE plpgsql AS $$
DECLARE
    s pgq.queues;
    clock timestamptz;
    allow integer;
    busy integer;
    picked bigint[] := '{}';
    slotted text[] := '{}';
BEGIN
    PERFORM 1 FROM pgq.queues AS q WHERE q.queue = ANY (ruled) ORDER BY q.queue FOR UPDATE;
    -- after the locks: the previous claimer of these queues has committed, and its clock
    -- reading is behind ours
    clock := clock_timestamp();
    FOR s IN SELECT * FROM pgq.queues AS q WHERE q.queue = ANY (ruled) ORDER BY q.queue LOOP
        CONTINUE WHEN s.paused;
        IF s.concurrency IS NOT NULL OR s.key_concurrency IS NOT NULL OR s.rate IS NOT NULL THEN
            PERFORM pgq._require_fresh_snapshots(format('claim from queue %s, which has limits', s.queue));
        END IF;
        allow := max_jobs;
        IF s.concurrency IS NOT NULL THEN
            SELECT count(*) INTO busy FROM pgq.jobs AS j
             WHERE j.status = 'running' AND j.holds_slot AND j.queue = s.queue;
            allow := least(allow, s.concurrency - busy);
        END IF;
        IF s.rate IS NOT NULL THEN
            s.tokens := least(s.burst::double precision,
                              s.tokens + s.rate::double precision
                                         * greatest(0, extract(epoch FROM clock - s.tokens_at)));
            UPDATE pgq.queues AS q SET tokens = s.tokens, tokens_at = clock WHERE q.queue = s.queue;
            allow := least(allow, floor(s.tokens)::integer);
        END IF;
        IF s.concurrency IS NOT NULL OR s.key_concurrency IS NOT NULL THEN
            slotted := slotted || s.queue;
        END IF;
        CONTINUE WHEN allow <= 0;
        IF s.key_concurrency IS NULL THEN
            picked := picked || ARRAY(
                SELECT j.id FROM pgq.jobs AS j
                 WHERE j.status = 'queued' AND j.queue = s.queue AND j.run_at <= now()
                   AND (job_types IS NULL OR j.type = ANY (job_types))
                 ORDER BY j.priority, j.run_at, j.id
                 LIMIT allow
                   FOR UPDATE SKIP LOCKED);
        ELSE
            picked := picked || pgq._pick_by_key(s.queue, s.key_concurrency, allow, job_types);
        END IF;
    END LOOP;

    RETURN QUERY
    WITH candidates AS (
        SELECT j.id, j.priority, j.run_at FROM pgq.jobs AS j WHERE j.id = ANY (picked)
        UNION ALL
        -- queues without settings: as pgq.claim's fast path
        SELECT c.id, c.priority, c.run_at
          FROM (SELECT DISTINCT w FROM unnest(wanted) AS w WHERE NOT (w = ANY (ruled)))
               AS free(queue)
         CROSS JOIN LATERAL (
               SELECT j.id, j.priority, j.run_at
                 FROM pgq.jobs AS j
                WHERE j.status = 'queued'
                  AND j.queue = free.queue
                  AND j.run_at <= now()
                  AND (job_types IS NULL OR j.type = ANY (job_types))
                ORDER BY j.priority, j.run_at, j.id
                LIMIT max_jobs
                  FOR UPDATE SKIP LOCKED) AS c
    ), claimed AS (
        UPDATE pgq.jobs AS j
           SET status = 'running',
               attempts = j.attempts + 1,
               worker_id = _claim_limited.worker_id,
               claimed_at = clock,
               lease_expires_at = clock + make_interval(secs => j.timeout_seconds * 1.25),
               holds_slot = j.queue = ANY (slotted),
               updated_at = now()
         WHERE j.id = ANY (ARRAY(SELECT c.id FROM candidates AS c
                                  ORDER BY c.priority, c.run_at, c.id LIMIT max_jobs))
        RETURNING j.*
    ), spent AS (
        UPDATE pgq.queues AS q
           SET tokens = q.tokens - n.claimed
          FROM (SELECT c.queue, count(*) AS claimed FROM claimed AS c GROUP BY c.queue) AS n
         WHERE q.queue = n.queue AND q.rate IS NOT NULL
    )
    SELECT * FROM claimed AS c ORDER BY c.priority, c.run_at, c.id;
END
$$;
COMMENT ON FUNCTION pgq._claim_limited(text, integer, text[], text[], text[]) IS
    '_claim_limited: pgq.claim for queues with settings: pause, concurrency, key_concurrency and rate honoured.';


-- claim (replaces 0009's; same signature and contract, plus flow control): queued →
-- running for up to max_jobs jobs whose run_at has passed, in claim order (priority, then
-- run_at, then id), from the given queues (NULL: every queue) and optionally only of some
-- types. Queues with settings in pgq.queues go through pgq._claim_limited: nothing from a
-- paused queue, never more than concurrency running jobs per queue nor key_concurrency per
-- concurrency_key, at most burst + rate × T claims in any T seconds; a limit met means
-- fewer jobs, never an error. Leaves each claimed job with attempts + 1, worker_id,
-- claimed_at and a lease of 1.25 × timeout_seconds. Rows locked by another transaction are
-- skipped, never waited on, so concurrent claimers never get the same job. Returns the
-- claimed jobs in claim order, nothing when nothing is due. Raises PQ400 for an empty
-- worker_id or a max_jobs outside 1..10000, and 0A000 for a limited queue inside a
-- REPEATABLE READ transaction.
CREATE OR REPLACE FUNCTION pgq.claim(
    worker_id text,
    max_jobs integer DEFAULT 1,
    queues text[] DEFAULT NULL,
    job_types text[] DEFAULT NULL
) RETURNS SETOF pgq.jobs
LANGUAGE plpgsql AS $$
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
        wanted := coalesce(queues, ARRAY(SELECT pgq._queued_queues()));
        ruled := ARRAY(SELECT unnest(ruled) INTERSECT SELECT unnest(wanted));
        IF cardinality(ruled) > 0 THEN
            RETURN QUERY SELECT * FROM pgq._claim_limited(claim.worker_id, max_jobs, wanted,
                                                          ruled, job_types);
            RETURN;
        END IF;
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
    'claim: queued → running for up to max_jobs due jobs (priority, run_at, id), FOR UPDATE SKIP LOCKED, within each queue''s pause and limits.';


-- next_due (replaces 0002's; same signature): what a runner sleeps until when it has
-- nothing to claim: the earliest time a queued job it could claim is due, from the given
-- queues (NULL: every queue) and of the given types (NULL when none), and the earliest
-- lease expiry of any running job (NULL when none). Flow control: a paused queue, and a
-- queue whose running jobs fill its concurrency, count for nothing (pgq.resume and a freed
-- slot notify); a key whose running jobs fill key_concurrency hides its jobs; a queue out
-- of rate tokens counts from the time its next token is due. Reads the first entry of
-- jobs_due_idx per queue, never the whole backlog (a key-limited queue steps over the due
-- jobs of full keys).
CREATE OR REPLACE FUNCTION pgq.next_due(queues text[] DEFAULT NULL, job_types text[] DEFAULT NULL)
RETURNS TABLE (next_run_at timestamptz, next_lease_expiry timestamptz)
LANGUAGE sql STABLE AS $$
    WITH wanted AS (
        SELECT w.queue, q.paused, q.concurrency, q.key_concurrency, q.rate, q.tokens, q.tokens_at
          FROM unnest(coalesce(queues, ARRAY(SELECT pgq._queued_queues()))) AS w(queue)
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
             CROSS JOIN LATERAL (
                   SELECT j.run_at FROM pgq.jobs AS j
                    WHERE j.status = 'queued' AND j.queue = o.queue
                      AND (job_types IS NULL OR j.type = ANY (job_types))
                      AND (o.blocked IS NULL OR j.concurrency_key IS NULL
                           OR NOT (j.concurrency_key = ANY (o.blocked)))
                    ORDER BY j.run_at
                    LIMIT 1) AS first),
           (SELECT min(j.lease_expires_at) FROM pgq.jobs AS j WHERE j.status = 'running')
$$;
COMMENT ON FUNCTION pgq.next_due(text[], text[]) IS
    'next_due: earliest time a claimable queued job is due (pause, limits and rate tokens considered) and earliest lease expiry; what idle runners sleep until.';


-- Enqueue with a concurrency_key. pgq.enqueue gains the parameter (appended, so positional
-- callers are unaffected); the JSON paths (enqueue_many, enqueue_bulk) take the key
-- "concurrency_key".

DROP FUNCTION pgq.enqueue(text, jsonb, text, integer, timestamptz, integer, integer, text, bigint[]);

-- enqueue (replaces 0002's, with concurrency_key): → queued (or waiting, or dead when a
-- parent already failed). Applies always, given valid arguments. Leaves a new job, or for a
-- known idempotency_key the existing job untouched. With depends_on the job waits until
-- every parent succeeded; when a parent is already dead or cancelled the job is created
-- dead. concurrency_key (NULL, or 1-256 characters) puts the job under its queue's
-- key_concurrency limit.
-- Raises PQ400 for an invalid argument or a depends_on naming a job that does not exist,
-- and 0A000 for depends_on inside a REPEATABLE READ transaction (_require_fresh_snapshots).
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
    concurrency_key text DEFAULT NULL
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
                               idempotency_key, depends_on, concurrency_key, status, finished_at,
                               last_error, errors)
    VALUES (job_type, args, queue, priority, run_at, max_attempts, timeout_seconds,
            idempotency_key, parents, concurrency_key, new_status,
            CASE WHEN new_status = 'dead' THEN now() END,
            failure, CASE WHEN failure IS NULL THEN '[]'::jsonb ELSE jsonb_build_array(failure) END)
    ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING * INTO j;

    IF NOT FOUND THEN
        -- a job with this key exists (possibly committed by a concurrent enqueue just now,
        -- which this new statement's snapshot sees)
        SELECT * INTO j FROM pgq.jobs AS t WHERE t.idempotency_key = enqueue.idempotency_key;
    END IF;
    RETURN j;
END
$$;
COMMENT ON FUNCTION pgq.enqueue(text, jsonb, text, integer, timestamptz, integer, integer, text, bigint[], text) IS
    'enqueue: create a job (queued, or waiting on depends_on); returns the existing job for a known idempotency_key.';


ALTER TYPE pgq.job_spec ADD ATTRIBUTE concurrency_key text;


-- _job_spec (replaces 0002's, with concurrency_key): one element of pgq.enqueue_many's
-- input as a job_spec, with the defaults of pgq.enqueue filled in and delay_seconds turned
-- into run_at on the database's clock. Raises a data exception (SQLSTATE class 22) for a
-- value of the wrong type, such as "priority": "high"; pgq.enqueue_many turns that into
-- PQ400 naming the element.
CREATE OR REPLACE FUNCTION pgq._job_spec(job jsonb) RETURNS pgq.job_spec
LANGUAGE sql STABLE AS $$
    SELECT ROW(r.type, coalesce(r.args, '{}'), coalesce(r.queue, 'default'),
               coalesce(r.priority, 0),
               coalesce(r.run_at, now() + make_interval(secs => coalesce(r.delay_seconds, 0))),
               coalesce(r.max_attempts, 10), coalesce(r.timeout_seconds, 300),
               r.idempotency_key, r.depends_on, NULL, r.concurrency_key)::pgq.job_spec
      FROM jsonb_populate_record(NULL::pgq.job_spec, job) AS r
$$;


-- _check_job_array (replaces 0005's, with concurrency_key among the known keys): refuse a
-- pgq.enqueue_many / pgq.enqueue_bulk input that is not a JSON array of objects with known
-- keys, at most one of run_at and delay_seconds, and a non-negative delay_seconds. Values
-- of the wrong type are left to the conversion (_job_rows), the rules on values to
-- _invalid_job. Raises PQ400 naming the first bad element.
CREATE OR REPLACE FUNCTION pgq._check_job_array(jobs jsonb) RETURNS void
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
                                 concurrency_key}'::text[] <> '{}'
                     OR (e.value ? 'run_at' AND e.value ? 'delay_seconds')
                     OR CASE WHEN jsonb_typeof(e.value->'delay_seconds') = 'number'  -- else: _job_rows
                             THEN (e.value->>'delay_seconds')::double precision < 0 END
           END
     ORDER BY e.ord LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'cannot enqueue jobs[%]: each job must be an object with known keys (type, args, queue, priority, run_at or a non-negative delay_seconds, max_attempts, timeout_seconds, idempotency_key, depends_on, concurrency_key)',
                        bad_idx USING ERRCODE = 'PQ400';
    END IF;
END
$$;


-- _job_rows (replaces 0005's, with concurrency_key): the elements of a job array as typed
-- rows, in input order (ord counts from 1), with the defaults of pgq.enqueue filled in and
-- delay_seconds turned into run_at on the database's clock, as pgq._job_spec does for one
-- element. A key that is absent or JSON null takes the default. One
-- jsonb_populate_recordset over the whole array rather than one call per element; a SQL
-- function the planner inlines into the caller's query. Raises a data exception (SQLSTATE
-- class 22) for a value of the wrong type; callers turn it into PQ400 naming the element
-- with pgq._name_unconvertible_job.
DROP FUNCTION pgq._job_rows(jsonb);
CREATE FUNCTION pgq._job_rows(jobs jsonb)
RETURNS TABLE (ord bigint, type text, args jsonb, queue text, priority integer,
               run_at timestamptz, max_attempts integer, timeout_seconds integer,
               idempotency_key text, depends_on bigint[], concurrency_key text)
LANGUAGE sql STABLE AS $$
    SELECT r.ord, r.type, coalesce(r.args, '{}'), coalesce(r.queue, 'default'),
           coalesce(r.priority, 0),
           coalesce(r.run_at, now() + make_interval(secs => coalesce(r.delay_seconds, 0))),
           coalesce(r.max_attempts, 10), coalesce(r.timeout_seconds, 300),
           r.idempotency_key, r.depends_on, r.concurrency_key
      FROM jsonb_populate_recordset(NULL::pgq.job_spec, jobs) WITH ORDINALITY
           AS r(type, args, queue, priority, run_at, max_attempts, timeout_seconds,
                idempotency_key, depends_on, delay_seconds, concurrency_key, ord)
$$;


-- _invalid_key: why a concurrency_key would be refused, or NULL when it is acceptable
-- (NULL, or 1-256 characters). Shared by enqueue_bulk and enqueue_many.
CREATE FUNCTION pgq._invalid_key(concurrency_key text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN length(concurrency_key) NOT BETWEEN 1 AND 256
                THEN 'concurrency_key must be 1-256 characters' END
$$;
COMMENT ON FUNCTION pgq._invalid_key(text) IS
    '_invalid_key: why a concurrency_key would be refused (NULL when acceptable).';


-- enqueue_bulk (replaces 0005's, with concurrency_key): → queued for every job of a JSON
-- array, in one INSERT, all or nothing. Applies when every element is valid and none has
-- an idempotency_key or depends_on (the bulk case: no job can exist already or have to
-- wait; pgq.enqueue_many takes those). Input, defaults, rules and messages are
-- pgq.enqueue_many's. Leaves the new jobs queued, inserted in input order (so their ids
-- ascend in that order); pgq.jobs' insert triggers wake each queue once, as for any
-- insert. Returns one row: ids (input order), run_ats (each job's run_at in input order,
-- or NULL when every job runs at created_at, the common case of no run_at and no
-- delay_seconds) and created_at (now(), also every job's updated_at); every other column
-- is what the input said or pgq.enqueue's default (attempts 0), so a caller that has the
-- input needs no full rows back.
-- Raises PQ400 naming the first invalid element (jobs[i], counting from 0), including a
-- value of the wrong type and an element with idempotency_key or depends_on.
CREATE OR REPLACE FUNCTION pgq.enqueue_bulk(jobs jsonb)
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
                                          pgq._invalid_key(r.concurrency_key))
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
                                  timeout_seconds, concurrency_key)
            SELECT r.type, r.args, r.queue, r.priority, r.run_at, r.max_attempts,
                   r.timeout_seconds, r.concurrency_key
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


-- enqueue_many (replaces 0005's, with concurrency_key): enqueue every job described in a
-- JSON array, all or nothing. Each element is an object with "type" and optionally "args",
-- "queue", "priority", "run_at" or "delay_seconds" (counted on the database's clock),
-- "max_attempts", "timeout_seconds", "idempotency_key", "depends_on", "concurrency_key"; a
-- key that is absent or JSON null takes pgq.enqueue's default. Returns the jobs in input
-- order. When no job has an idempotency_key or depends_on (the bulk case) they are
-- inserted by pgq.enqueue_bulk; otherwise every job goes through pgq.enqueue, one by one.
-- Raises PQ400 naming the first invalid element (jobs[i], counting from 0), including a
-- value of the wrong type.
CREATE OR REPLACE FUNCTION pgq.enqueue_many(jobs jsonb) RETURNS SETOF pgq.jobs
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
                                  r.depends_on, NULL, r.concurrency_key)::pgq.job_spec
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
                                    spec.concurrency_key);
        EXCEPTION WHEN SQLSTATE 'PQ400' THEN
            RAISE EXCEPTION 'cannot enqueue jobs[%]: %', idx,
                            regexp_replace(SQLERRM, '^cannot enqueue: ', '')
                USING ERRCODE = 'PQ400';
        END;
        idx := idx + 1;
    END LOOP;
END
$$;
