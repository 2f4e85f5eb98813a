-- 0005_flow_control: pause, concurrency limits (per queue and per concurrency_key) and a
-- token-bucket rate per queue, enforced inside pgq.claim so that they bind every claimer
-- (asyncio runners, HTTP runners, psql).
--
-- The data lives in the baseline (pgq.queues, pgq.jobs.concurrency_key and holds_slot,
-- jobs_slots_idx in 0001), and so do the functions it changes (pgq.claim and the enqueue
-- paths in 0002, pgq.next_due in 0004), each defined once. This file adds:
--   * pgq.pause, pgq.resume, pgq.set_limits: the settings, from psql, HTTP and the CLI;
--   * pgq._claim_limited and pgq._pick_by_key: pgq.claim's path for queues with settings;
--   * _500_notify_slot_freed: a job that held a slot (holds_slot: claimed while its queue
--     had a concurrency or key limit) left running, so pgq_<queue> wakes runners held back
--     by the limit. A slot is the running job row itself: it survives kill -9 of its
--     runner and frees when the job leaves running (complete, fail, cancel, release, or
--     lease expiry). A runner held back by a rate sleeps until pgq.next_due's next token.
--
-- Cost: a claim from queues without settings does what it did before plus one probe of
-- pgq.queues (empty for most installations). A claim touching a queue with settings locks
-- that queue's pgq.queues row until its transaction ends, so the claims of one limited
-- queue run one at a time: that is what makes the running count it reads exact.


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
COMMENT ON FUNCTION pgq._notify_slot_freed() IS $$_notify_slot_freed: a job that held a slot left running (completed, failed, cancelled,
released, expired). Applies when its queue still has a concurrency limit, or a key limit
and the job a key, and is not paused. Leaves a pgq_<queue> notification, so a runner held
back by the limit claims at once.$$;


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
COMMENT ON FUNCTION pgq._check_limit(text, numeric) IS $$_check_limit: raises PQ400 naming the argument unless value is NULL or positive.$$;


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
COMMENT ON FUNCTION pgq.pause(text) IS $$pause: a queue stops handing out jobs. Applies to any valid queue name (with or without
jobs). Leaves the queue's pgq.queues row with paused = true (created when missing): no
claim path returns its jobs until pgq.resume; enqueue, complete, fail and cancel go on,
running jobs finish. Idempotent. Raises PQ400 for an invalid queue name.$$;


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
COMMENT ON FUNCTION pgq.resume(text) IS $$resume: a paused queue hands out jobs again. Applies to any valid queue name. Leaves
paused = false (a queue without a row stays without one) and a pgq_<queue> notification
so idle runners claim at once. Returns the queue's settings. Idempotent. Raises PQ400 for
an invalid queue name.$$;


-- set_limits: replace all four limits of a queue at once (NULL: no limit). Applies to any
-- valid queue name. Leaves the queue's row (created when missing; pause state kept) with
-- the given concurrency, key_concurrency, rate (claims per second) and burst (default
-- ceil(rate)); a new rate starts with a full bucket, a changed one keeps the tokens it has
-- (at most the new burst). Running jobs of the queue occupy slots from now on, and a
-- pgq_<queue> notification wakes runners in case the limits were loosened.
-- Raises PQ400 for an invalid queue name, a value <= 0, burst without rate, or a rate
-- outside 0.001..1,000,000 per second.
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
    IF set_limits.rate NOT BETWEEN 0.001 AND 1000000 THEN
        RAISE EXCEPTION 'cannot set limits: rate % is outside 0.001..1000000 per second',
                        set_limits.rate
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
COMMENT ON FUNCTION pgq.set_limits(text, integer, integer, numeric, integer) IS $$set_limits: replace all four limits of a queue at once (NULL: no limit). Applies to any
valid queue name. Leaves the queue's row (created when missing; pause state kept) with
the given concurrency, key_concurrency, rate (claims per second) and burst (default
ceil(rate)); a new rate starts with a full bucket, a changed one keeps the tokens it has
(at most the new burst). Running jobs of the queue occupy slots from now on, and a
pgq_<queue> notification wakes runners in case the limits were loosened.
Raises PQ400 for an invalid queue name, a value <= 0, burst without rate, or a rate
outside 0.001..1,000,000 per second.$$;


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
COMMENT ON FUNCTION pgq._pick_by_key(text, integer, integer, text[]) IS $$_pick_by_key: for pgq.claim, up to allow due queued jobs of a queue with a key limit, in
claim order, such that no key ends up with more than key_concurrency running jobs.
Applies while the caller holds the queue's pgq.queues row lock (so no other limited
claim of the queue runs). Leaves the picked rows locked FOR UPDATE. Jobs of one key are
picked in claim order: once a key is full, or its next job is locked by another
transaction (skipped), none of its later jobs is picked. Cost: the walk of
jobs_claim_idx steps over the queued jobs of full keys, so a long run of one full key's
jobs at the head of the queue is read on every claim.$$;


-- _claim_limited: pgq.claim when some wanted queue has settings (ruled: those queues).
-- Applies after pgq.claim validated its arguments. Locks the ruled queues' rows in name
-- order, then per queue: nothing from a paused queue; at most concurrency minus the
-- running jobs with a slot; at most the whole tokens of the bucket (refilled on the
-- database clock first); per key as _pick_by_key. Queues without settings are claimed as
-- by pgq.claim's fast path. Leaves the claimed jobs running (holds_slot set in queues
-- with a concurrency or key limit; claimed_at on the clock the bucket was read at in a
-- rated queue, else read after the slots were counted; a fresh lease_token each) and
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
    rated text[] := '{}';
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
            rated := rated || s.queue;
        END IF;
        IF s.concurrency IS NOT NULL OR s.key_concurrency IS NOT NULL THEN
            slotted := slotted || s.queue;
        END IF;
        CONTINUE WHEN allow <= 0;
        IF s.key_concurrency IS NULL THEN
            picked := picked || ARRAY(SELECT d.id FROM pgq._pick_due(s.queue, allow, job_types) AS d);
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
         CROSS JOIN LATERAL pgq._pick_due(free.queue, max_jobs, job_types) AS c
    ), claimed AS (
        UPDATE pgq.jobs AS j
           SET status = 'running',
               attempts = j.attempts + 1,
               worker_id = _claim_limited.worker_id,
               -- a rated queue's claims are stamped with the bucket's clock; the others
               -- are read now, after the slot counts, so a slot freed by a completion
               -- this claim saw ends before the job that takes it starts
               claimed_at = CASE WHEN j.queue = ANY (rated) THEN clock ELSE clock_timestamp() END,
               lease_expires_at = clock + make_interval(secs => j.timeout_seconds * 1.25),
               lease_token = gen_random_uuid(),
               holds_slot = j.queue = ANY (slotted),
               progress = NULL,
               updated_at = now()
         WHERE j.id = ANY (ARRAY(SELECT c.id FROM candidates AS c
                                  ORDER BY c.priority, c.run_at, c.id LIMIT max_jobs))
        RETURNING j.*
    ), announced AS (
        -- → running, as pgq.claim announces it (only while a session watches events)
        SELECT count(pg_notify('pgq_events', json_build_object(
                   'id', a.id, 'status', 'running', 'queue', a.queue, 'type', a.type)::text)) AS n
          FROM claimed AS a
         WHERE EXISTS (SELECT 1 FROM pgq.event_watchers)
    ), spent AS (
        UPDATE pgq.queues AS q
           SET tokens = q.tokens - n.claimed
          FROM (SELECT c.queue, count(*) AS claimed FROM claimed AS c GROUP BY c.queue) AS n
         WHERE q.queue = n.queue AND q.rate IS NOT NULL
    )
    SELECT c.* FROM claimed AS c CROSS JOIN announced ORDER BY c.priority, c.run_at, c.id;
END
$$;
COMMENT ON FUNCTION pgq._claim_limited(text, integer, text[], text[], text[]) IS $$_claim_limited: pgq.claim when some wanted queue has settings (ruled: those queues).
Applies after pgq.claim validated its arguments. Locks the ruled queues' rows in name
order, then per queue: nothing from a paused queue; at most concurrency minus the
running jobs with a slot; at most the whole tokens of the bucket (refilled on the
database clock first); per key as _pick_by_key. Queues without settings are claimed as
by pgq.claim's fast path. Leaves the claimed jobs running (holds_slot set in queues
with a concurrency or key limit; claimed_at on the clock the bucket was read at in a
rated queue, else read after the slots were counted; a fresh lease_token each) and
one token spent per claimed job. Returns them in claim order. Raises 0A000 in a
REPEATABLE READ transaction for a limited queue: its old snapshot would miss claims
that committed since, and the count would be wrong.$$;
