-- 0007_progress: progress reports from running handlers, bulk replay and bulk cancel, and
-- the indexes behind the dashboard's job list.
--
-- progress is the last object a handler reported for its current attempt (pgq.claim clears
-- it). It is announced on pgq_events as {"id", "status": "running", "queue", "type",
-- "event": "progress"}, so a browser following GET /jobs/{id}/events sees a bar move.

ALTER TABLE pgq.jobs ADD COLUMN progress jsonb;

-- GET /jobs and the dashboard list jobs in id order, filtered by status, queue and type,
-- a page at a time (id > cursor), merging one range per status (pgq/queries/reads.py).
-- Each status's branch reads an index in id order that holds only that status (or only
-- the jobs of now), so a page never walks the history (a page of queued jobs, or of a rare
-- queue's succeeded ones, once walked 990,000 older succeeded jobs along the primary key:
-- 23,000 buffers):
--   succeeded, dead, cancelled, waiting by queue or type: (queue, status, id),
--     (type, status, id);
--   waiting, queued, dead, cancelled: (status, id); queued jobs by queue or type walk it
--     past the other queued jobs, at most the backlog, never the history;
--   succeeded alone: the primary key (succeeded is most of the table, so a page is near);
--   running: jobs_lease_idx, the jobs leased now, read whole and sorted by id.
-- A partial index costs nothing to rows outside its predicate: a claim (→ running) pays
-- for none of these, an enqueue for one entry, a completion (→ succeeded) for two: an
-- enqueue of 1,000 jobs touches 8,331 buffers (6,605 with none of these; 11,879 with
-- queued in the queue and type indexes too, for lists already bounded by the backlog), a
-- completion of 50 touches 648 (484).
CREATE INDEX jobs_list_status_idx ON pgq.jobs (status, id)
    WHERE status IN ('waiting', 'queued', 'dead', 'cancelled');
CREATE INDEX jobs_list_queue_idx ON pgq.jobs (queue, status, id)
    WHERE status IN ('succeeded', 'dead', 'cancelled', 'waiting');
CREATE INDEX jobs_list_type_idx ON pgq.jobs (type, status, id)
    WHERE status IN ('succeeded', 'dead', 'cancelled', 'waiting');


-- event_watchers: one row per LISTEN session that follows every status change on
-- pgq_events (a coordinator while some browser or client holds GET /events open).
-- pgq.claim announces → running only while a row exists: a notification makes the
-- claiming transaction take PostgreSQL's global notify lock at commit, which measurably
-- delayed jobs in tests/test_doorbell.py's stress test when every claim paid it. Other
-- status changes are always announced (waiters and runners need them). UNLOGGED, like
-- pgq.idle_listeners: the rows describe live sessions.
CREATE UNLOGGED TABLE pgq.event_watchers (
    listener_pid integer     PRIMARY KEY,
    since        timestamptz NOT NULL DEFAULT now()
);


-- watch_events: register the LISTEN session listener_pid as following every status
-- change, so claims are announced too. Applies always (registering twice is harmless).
-- Leaves its row in pgq.event_watchers, and removes the rows of sessions that no longer
-- exist (a crashed coordinator never deregisters). Raises nothing.
CREATE FUNCTION pgq.watch_events(listener_pid integer DEFAULT pg_backend_pid()) RETURNS void
LANGUAGE sql AS $$
    DELETE FROM pgq.event_watchers AS w
     WHERE NOT EXISTS (SELECT 1 FROM pg_stat_activity AS a WHERE a.pid = w.listener_pid);
    INSERT INTO pgq.event_watchers (listener_pid) VALUES (watch_events.listener_pid)
        ON CONFLICT DO NOTHING;
$$;
COMMENT ON FUNCTION pgq.watch_events(integer) IS $$watch_events: register the LISTEN session listener_pid as following every status
change, so claims are announced too. Applies always (registering twice is harmless).
Leaves its row in pgq.event_watchers, and removes the rows of sessions that no longer
exist (a crashed coordinator never deregisters). Raises nothing.$$;

-- unwatch_events: the LISTEN session listener_pid no longer follows every status change.
-- Applies always. Leaves its row gone; when no row is left, claims stop announcing.
-- Raises nothing.
CREATE FUNCTION pgq.unwatch_events(listener_pid integer DEFAULT pg_backend_pid()) RETURNS void
LANGUAGE sql AS $$
    DELETE FROM pgq.event_watchers AS w WHERE w.listener_pid = unwatch_events.listener_pid;
$$;
COMMENT ON FUNCTION pgq.unwatch_events(integer) IS $$unwatch_events: the LISTEN session listener_pid no longer follows every status change.
Applies always. Leaves its row gone; when no row is left, claims stop announcing.
Raises nothing.$$;


-- progress: running → running with progress stored and a fresh lease of
-- 1.25 × timeout_seconds from now (a report is also a heartbeat). Applies when the job is
-- running, held by worker_id and, when attempt is given, on that attempt, and when
-- lease_token is given, under that lease. Leaves progress
-- (a JSON object of at most 8 KiB) on the job and a pgq_events notification
-- {"id", "status": "running", "queue", "type", "event": "progress"}.
-- Raises PQ400 for a progress that is not an object or is over 8 KiB, PQ404 (no such
-- job), PQ419 (lease_token not the current one) or PQ409 (not running, another holder,
-- another attempt).
CREATE FUNCTION pgq.progress(job_id bigint, worker_id text, progress jsonb,
                             attempt integer DEFAULT NULL, lease_token uuid DEFAULT NULL)
RETURNS pgq.jobs
LANGUAGE plpgsql AS $$
DECLARE
    j pgq.jobs;
BEGIN
    IF progress.progress IS NULL OR jsonb_typeof(progress.progress) <> 'object' THEN
        RAISE EXCEPTION 'cannot report progress of job %: progress must be a JSON object', job_id
            USING ERRCODE = 'PQ400';
    END IF;
    IF octet_length(progress.progress::text) > 8192 THEN
        RAISE EXCEPTION 'cannot report progress of job %: progress is % bytes, over 8 KiB',
                        job_id, octet_length(progress.progress::text)
            USING ERRCODE = 'PQ400';
    END IF;
    UPDATE pgq.jobs AS t
       SET progress = progress.progress,
           lease_expires_at = now() + make_interval(secs => t.timeout_seconds * 1.25),
           updated_at = now()
     -- lease_expires_at IS NOT NULL: "running", written so (see jobs_lease_idx)
     WHERE t.id = job_id AND t.lease_expires_at IS NOT NULL AND t.worker_id = progress.worker_id
       AND (attempt IS NULL OR t.attempts = attempt)
       AND (progress.lease_token IS NULL OR t.lease_token = progress.lease_token)
    RETURNING * INTO j;
    IF NOT FOUND THEN
        PERFORM pgq._refuse(job_id, worker_id, attempt, 'report progress', progress.lease_token);
    END IF;
    PERFORM pg_notify('pgq_events', json_build_object(
                'id', j.id, 'status', 'running', 'queue', j.queue, 'type', j.type,
                'event', 'progress')::text);
    RETURN j;
END
$$;
COMMENT ON FUNCTION pgq.progress(bigint, text, jsonb, integer, uuid) IS $$progress: running → running with progress stored and a fresh lease of
1.25 × timeout_seconds from now (a report is also a heartbeat). Applies when the job is
running, held by worker_id and, when attempt is given, on that attempt, and when
lease_token is given, under that lease. Leaves progress
(a JSON object of at most 8 KiB) on the job and a pgq_events notification
{"id", "status": "running", "queue", "type", "event": "progress"}.
Raises PQ400 for a progress that is not an object or is over 8 KiB, PQ404 (no such
job), PQ419 (lease_token not the current one) or PQ409 (not running, another holder,
another attempt).$$;

-- retry_where: dead / cancelled → queued (bulk dead-letter replay) for every job in one of
-- statuses (default dead), of queue and of job_type when given (NULL: any). Applies to
-- jobs not locked by another transaction (those are skipped). Leaves each job as
-- pgq.retry does with one extra attempt, its run_at spread evenly over spread from now in
-- id order (spread 0: all due now); a job with depends_on goes through pgq.retry itself
-- (→ waiting while a parent runs) and is skipped while a parent is dead or cancelled
-- after this call's own replays (parents are replayed first).
-- Returns how many jobs it replayed. Raises PQ400 for statuses other than dead and
-- cancelled, an empty list, or a negative spread; 0A000 for a job with depends_on inside a
-- REPEATABLE READ transaction.
CREATE FUNCTION pgq.retry_where(statuses text[] DEFAULT '{dead}', queue text DEFAULT NULL,
                                job_type text DEFAULT NULL, spread interval DEFAULT '0')
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    ids bigint[];
    dependent bigint;
    replayed integer;
BEGIN
    IF statuses IS NULL OR cardinality(statuses) = 0
       OR NOT statuses <@ ARRAY['dead', 'cancelled'] THEN
        RAISE EXCEPTION 'cannot retry: statuses must be a non-empty list of dead and cancelled, not %',
                        coalesce(statuses::text, 'NULL')
            USING ERRCODE = 'PQ400';
    END IF;
    IF spread IS NULL OR spread < interval '0' THEN
        RAISE EXCEPTION 'cannot retry: spread must be a non-negative interval' USING ERRCODE = 'PQ400';
    END IF;

    -- Jobs without parents (nearly all): one UPDATE. The ids are locked first, in id order,
    -- because FOR UPDATE cannot share a query level with the numbering that spreads them.
    ids := ARRAY(SELECT x.id FROM pgq.jobs AS x
                  WHERE x.status = ANY (statuses) AND x.depends_on IS NULL
                    AND (retry_where.queue IS NULL OR x.queue = retry_where.queue)
                    AND (job_type IS NULL OR x.type = job_type)
                  ORDER BY x.id
                    FOR UPDATE SKIP LOCKED);
    UPDATE pgq.jobs AS t
       SET status = 'queued',
           run_at = now() + spread * ((p.ord - 1)::float8 / cardinality(ids)),
           max_attempts = t.attempts + 1,
           finished_at = NULL, lease_expires_at = NULL, updated_at = now()
      FROM unnest(ids) WITH ORDINALITY AS p(id, ord)
     WHERE t.id = p.id;
    GET DIAGNOSTICS replayed = ROW_COUNT;

    -- Jobs with parents: pgq.retry decides between queued and waiting, one at a time.
    FOR dependent IN
        SELECT x.id FROM pgq.jobs AS x
         WHERE x.status = ANY (statuses) AND x.depends_on IS NOT NULL
           AND (retry_where.queue IS NULL OR x.queue = retry_where.queue)
           AND (job_type IS NULL OR x.type = job_type)
         ORDER BY x.id
    LOOP
        BEGIN
            PERFORM pgq.retry(dependent, 1);
            replayed := replayed + 1;
        EXCEPTION WHEN SQLSTATE 'PQ409' THEN
            NULL;  -- a parent ended dead or cancelled, or someone else replayed it first
        END;
    END LOOP;
    RETURN replayed;
END
$$;
COMMENT ON FUNCTION pgq.retry_where(text[], text, text, interval) IS $$retry_where: dead / cancelled → queued (bulk dead-letter replay) for every job in one of
statuses (default dead), of queue and of job_type when given (NULL: any). Applies to
jobs not locked by another transaction (those are skipped). Leaves each job as
pgq.retry does with one extra attempt, its run_at spread evenly over spread from now in
id order (spread 0: all due now); a job with depends_on goes through pgq.retry itself
(→ waiting while a parent runs) and is skipped while a parent is dead or cancelled
after this call's own replays (parents are replayed first).
Returns how many jobs it replayed. Raises PQ400 for statuses other than dead and
cancelled, an empty list, or a negative spread; 0A000 for a job with depends_on inside a
REPEATABLE READ transaction.$$;

-- cancel_where: waiting / queued / running → cancelled (bulk cancel) for every job in one
-- of statuses (default queued and waiting), of queue and of job_type when given (NULL:
-- any). Applies to jobs not locked by another transaction (those are skipped). Leaves each
-- as pgq.cancel does: finished_at, the lease cleared, a pgq_events notification (a running
-- job's runner stops its handler) and its waiting dependents dead. Returns how many jobs
-- it cancelled. Raises PQ400 for statuses other than waiting, queued and running or an
-- empty list; 0A000 inside a REPEATABLE READ transaction when there are dependents.
CREATE FUNCTION pgq.cancel_where(statuses text[] DEFAULT '{queued,waiting}',
                                 queue text DEFAULT NULL, job_type text DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    ids bigint[];
BEGIN
    IF statuses IS NULL OR cardinality(statuses) = 0
       OR NOT statuses <@ ARRAY['waiting', 'queued', 'running'] THEN
        RAISE EXCEPTION 'cannot cancel: statuses must be a non-empty list of waiting, queued and running, not %',
                        coalesce(statuses::text, 'NULL')
            USING ERRCODE = 'PQ400';
    END IF;
    WITH picked AS (
        SELECT x.id FROM pgq.jobs AS x
         WHERE x.status = ANY (statuses)
           AND (cancel_where.queue IS NULL OR x.queue = cancel_where.queue)
           AND (job_type IS NULL OR x.type = job_type)
         ORDER BY x.id
           FOR UPDATE SKIP LOCKED
    ), cancelled AS (
        UPDATE pgq.jobs AS t
           SET status = 'cancelled', finished_at = now(), lease_expires_at = NULL, lease_token = NULL,
               updated_at = now()
          FROM picked
         WHERE t.id = picked.id
        RETURNING t.id
    )
    SELECT array_agg(id ORDER BY id) INTO ids FROM cancelled;
    IF ids IS NOT NULL THEN
        PERFORM pgq._doom_dependents(ids);
    END IF;
    RETURN coalesce(cardinality(ids), 0);
END
$$;
COMMENT ON FUNCTION pgq.cancel_where(text[], text, text) IS $$cancel_where: waiting / queued / running → cancelled (bulk cancel) for every job in one
of statuses (default queued and waiting), of queue and of job_type when given (NULL:
any). Applies to jobs not locked by another transaction (those are skipped). Leaves each
as pgq.cancel does: finished_at, the lease cleared, a pgq_events notification (a running
job's runner stops its handler) and its waiting dependents dead. Returns how many jobs
it cancelled. Raises PQ400 for statuses other than waiting, queued and running or an
empty list; 0A000 inside a REPEATABLE READ transaction when there are dependents.$$;
