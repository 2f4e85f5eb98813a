-- 0003_notifications: what pgq tells LISTEN sessions, and the doorbell that keeps enqueues
-- from paying for it. Part of the baseline (0001-0004).
--
-- Channels:
-- pgq_<queue>  payload ''. Sent when jobs enter `queued` in that queue, due now or later, so
--              idle runners claim or re-arm their timer. An UPDATE that queues jobs (retry
--              with backoff, lease expiry, dependency release, release, replay) always
--              sends it (_notify_update); an INSERT of queued jobs rings only when a
--              listener of that queue is registered idle (the doorbell, below). Postgres
--              folds identical (channel, payload) pairs within a transaction, so a
--              transaction that queues thousands of jobs sends one per queue. Updates that
--              queue nothing (claims, heartbeats, completions) send none.
-- pgq_events   payload {"id", "status", "queue", "type"}: one per status change of an
--              existing job (claim → running, back to queued, succeeded, dead, cancelled,
--              including cancellation of a running job), for waiters, for the runner that
--              must stop a cancelled handler and for GET /events; "event": "progress" marks
--              a progress report (0007). Enqueues are not announced (the doorbell's
--              reason). Never args or results, so it stays far below NOTIFY's 8000-byte
--              limit. Succeeded jobs are announced by pgq.complete and pgq.complete_many
--              themselves (_announce_succeeded), running ones by pgq.claim (only while a
--              session is registered with pgq.watch_events, 0007), the others by the
--              triggers.
-- pgq_cancel   the same payload, only for a running job that was cancelled: what a runner
--              must act on at once (stop the handler). Runners LISTEN here rather than on
--              pgq_events, which carries every completion of every runner: each runner
--              would receive and discard them all (~3-4 µs of Python each, so N runners
--              pay N times the whole cluster's completion rate).
--
-- Why the UPDATE and INSERT triggers are row triggers with a WHEN clause: declaring
-- transition tables makes Postgres copy every row of every statement (claims, heartbeats
-- and enqueues included) into tuplestores, ~4 µs per completed job, and a statement trigger
-- calls its function once per enqueue; the WHEN clauses are false for claims, heartbeats,
-- completions and queued inserts, so they never call anything.
--
-- The doorbell. A transaction that sent NOTIFY holds PostgreSQL's global notify lock from
-- its pre-commit through its commit's WAL flush, so producers that enqueue one job per
-- transaction and always NOTIFY commit one at a time (waits on Lock:object). So:
--   * A listener that wants wake-ups for new jobs registers as idle on its queues
--     (pgq.listen_idle), keyed by the pid of its LISTEN session, and deregisters when it is
--     busy (pgq.unlisten_idle). pgq runners and coordinator long-poll waiters do this.
--   * A READ COMMITTED transaction that inserted queued jobs into a queue sends
--     pgq_<queue> at COMMIT only when some listener is registered idle on that queue.
--     REPEATABLE READ and SERIALIZABLE ones always send it (their snapshot could miss a
--     registration made after it was taken).
--
-- The race, and the handshake that closes it. A producer reads the registry at commit; a
-- listener that registers just after that read would sleep through the producer's job.
-- So both sides take an advisory lock on the queue's key (pgq._doorbell_key):
--   producer   at COMMIT (a DEFERRABLE INITIALLY DEFERRED constraint trigger), take the
--              key in share mode until the end of the transaction, then, in a separate
--              statement (a fresh snapshot), read the registry.
--   listener   (1) register and commit; (2) pgq.wait_for_enqueuers: take and release the
--              key in exclusive mode, which waits for every producer that may have read the
--              registry before (1) committed, so their jobs are visible; (3) claim once
--              more; (4) sleep on LISTEN. A producer that takes the key after (2) reads a
--              registry that holds the listener, and notifies.
-- Taking the key at COMMIT rather than at INSERT keeps the share lock's window tiny: with
-- the lock held from INSERT, one slow enqueuing transaction stalled every listener going
-- idle in (2), and every producer queued behind those listeners, for as long as it ran.
-- An application that runs SET CONSTRAINTS ALL IMMEDIATE brings that window back, so (2)
-- gives up after lock_timeout (100 ms) and the listener polls and tries again.
--
-- Advisory key space: pg_advisory_*(1885827428, hashtext(queue)); 1885827428 is 'pgqd'.


-- _notify_insert: the row trigger after INSERT of a job created already finished (dead
-- because a parent failed). Leaves a pgq_events notification for it. Wake-ups for inserted
-- queued jobs are the doorbell's (_ring_doorbell). A row trigger whose WHEN filters in C: an
-- INSERT of queued jobs calls no function and builds no transition table. Raises nothing.
CREATE FUNCTION pgq._notify_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('pgq_events', json_build_object(
                'id', NEW.id, 'status', NEW.status, 'queue', NEW.queue, 'type', NEW.type)::text);
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION pgq._notify_insert() IS $$_notify_insert: the row trigger after INSERT of a job created already finished (dead
because a parent failed). Leaves a pgq_events notification for it. Wake-ups for inserted
queued jobs are the doorbell's (_ring_doorbell). A row trigger whose WHEN filters in C: an
INSERT of queued jobs calls no function and builds no transition table. Raises nothing.$$;

CREATE TRIGGER _500_notify_insert
    AFTER INSERT ON pgq.jobs
    FOR EACH ROW
    WHEN (NEW.status IN ('succeeded', 'dead', 'cancelled'))
    EXECUTE FUNCTION pgq._notify_insert();


-- _notify_update: the row trigger after UPDATE of pgq.jobs, for one row whose status
-- changed to queued, dead or cancelled (its WHEN clause lets no other row through: claims,
-- heartbeats and completions never call it). Leaves a pgq_<queue> notification (payload
-- '') for a row that entered queued, which Postgres folds into one per queue per
-- transaction, and for every such row a pgq_events notification {"id", "status", "queue",
-- "type"} (a retry, a backoff, a release, a replay: GET /events shows every change), sent
-- on pgq_cancel too when a running job was cancelled. Jobs that succeeded are announced by
-- pgq.complete and pgq.complete_many, the only transitions into succeeded. Raises nothing.
CREATE FUNCTION pgq._notify_update() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    event text;
BEGIN
    IF NEW.status = 'queued' THEN
        PERFORM pg_notify('pgq_' || NEW.queue, '');
    END IF;
    event := json_build_object(
                'id', NEW.id, 'status', NEW.status, 'queue', NEW.queue, 'type', NEW.type)::text;
    PERFORM pg_notify('pgq_events', event);
    IF NEW.status = 'cancelled' AND OLD.status = 'running' THEN
        PERFORM pg_notify('pgq_cancel', event);
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION pgq._notify_update() IS $$_notify_update: the row trigger after UPDATE of pgq.jobs, for one row whose status
changed to queued, dead or cancelled (its WHEN clause lets no other row through: claims,
heartbeats and completions never call it). Leaves a pgq_<queue> notification (payload
'') for a row that entered queued, which Postgres folds into one per queue per
transaction, and for every such row a pgq_events notification {"id", "status", "queue",
"type"} (a retry, a backoff, a release, a replay: GET /events shows every change), sent
on pgq_cancel too when a running job was cancelled. Jobs that succeeded are announced by
pgq.complete and pgq.complete_many, the only transitions into succeeded. Raises nothing.$$;

CREATE TRIGGER _500_notify_update
    AFTER UPDATE ON pgq.jobs
    FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status
          AND NEW.status IN ('queued', 'dead', 'cancelled'))
    EXECUTE FUNCTION pgq._notify_update();


-- _announce_succeeded: the pgq_events notification of each job that succeeded, in id
-- order; pgq.complete and pgq.complete_many call it with the rows their UPDATE returned
-- (a row trigger call per completed job measured slower). Applies always. Leaves one
-- notification per row, the payload built as in _notify_update. Raises nothing.
CREATE FUNCTION pgq._announce_succeeded(ids bigint[], queues text[], types text[])
RETURNS void
LANGUAGE sql AS $$
    SELECT count(pg_notify('pgq_events', json_build_object(
               'id', s.id, 'status', 'succeeded', 'queue', s.queue, 'type', s.type)::text))
      FROM (SELECT u.id, u.queue, u.type
              FROM unnest(ids, queues, types) AS u(id, queue, type)
             ORDER BY u.id) AS s
$$;
COMMENT ON FUNCTION pgq._announce_succeeded(bigint[], text[], text[]) IS $$_announce_succeeded: the pgq_events notification of each job that succeeded, in id
order; pgq.complete and pgq.complete_many call it with the rows their UPDATE returned
(a row trigger call per completed job measured slower). Applies always. Leaves one
notification per row, the payload built as in _notify_update. Raises nothing.$$;


-- idle_listeners: one row per LISTEN session waiting idle for new jobs of a queue.
-- UNLOGGED: the rows describe live sessions, which a crash ends anyway; and a transaction
-- that only writes here commits without waiting for a WAL flush.
CREATE UNLOGGED TABLE pgq.idle_listeners (
    queue        text        NOT NULL,
    listener_pid integer     NOT NULL,
    since        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (queue, listener_pid)
);

COMMENT ON TABLE pgq.idle_listeners IS
    'pgq: LISTEN sessions registered idle per queue; an enqueue notifies pgq_<queue> only '
    'when its queue has one (pgq.listen_idle / pgq.unlisten_idle).';


-- _doorbell_key: the second half of the advisory lock key (with class 1885827428) of a
-- queue's doorbell. Leaves nothing behind; raises nothing.
CREATE FUNCTION pgq._doorbell_key(queue text) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT hashtext(queue)
$$;
COMMENT ON FUNCTION pgq._doorbell_key(text) IS $$_doorbell_key: the second half of the advisory lock key (with class 1885827428) of a
queue's doorbell. Leaves nothing behind; raises nothing.$$;

-- _check_queues: check a list of queue names given to the doorbell functions. Leaves
-- nothing behind. Raises PQ400 unless the list is non-empty and every name is a valid
-- queue name.
CREATE FUNCTION pgq._check_queues(queues text[]) RETURNS void
LANGUAGE plpgsql STABLE AS $$
DECLARE
    bad text;
BEGIN
    IF queues IS NULL OR cardinality(queues) = 0 THEN
        RAISE EXCEPTION 'give at least one queue'
              USING ERRCODE = 'PQ400', HINT = 'e.g. ARRAY[''default'']';
    END IF;
    SELECT q INTO bad
      FROM unnest(queues) AS q
     WHERE q IS NULL OR NOT (q ~ '^[a-z][a-z0-9_]*$' AND length(q) <= 48)
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'queue % is invalid', coalesce(quote_literal(left(bad, 60)), 'NULL')
              USING ERRCODE = 'PQ400',
                    HINT = 'use a lowercase letter then up to 47 of a-z 0-9 _';
    END IF;
END
$$;
COMMENT ON FUNCTION pgq._check_queues(text[]) IS $$_check_queues: check a list of queue names given to the doorbell functions. Leaves
nothing behind. Raises PQ400 unless the list is non-empty and every name is a valid
queue name.$$;

-- listen_idle: register a LISTEN session as idle on queues. Applies when listener_pid is a
-- live backend (default: the calling session). Leaves one pgq.idle_listeners row per
-- queue for it (idempotent), so enqueues into those queues notify pgq_<queue> once this
-- transaction commits. Returns how many rows it added. Raises PQ400 for an invalid queue
-- name or a pid that is no live backend. For no lost wake-up, call
-- pgq.wait_for_enqueuers(queues) after this commits, then look for work, then sleep.
CREATE FUNCTION pgq.listen_idle(queues text[], listener_pid integer DEFAULT pg_backend_pid())
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    added integer;
BEGIN
    PERFORM pgq._check_queues(queues);
    IF listener_pid IS NULL
       OR NOT EXISTS (SELECT 1 FROM pg_stat_activity AS a
                       WHERE a.pid = listen_idle.listener_pid) THEN
        RAISE EXCEPTION 'no live session has pid %', coalesce(listener_pid::text, 'NULL')
              USING ERRCODE = 'PQ400',
                    HINT = 'pass the pg_backend_pid() of the session that LISTENs';
    END IF;
    INSERT INTO pgq.idle_listeners (queue, listener_pid)
    SELECT DISTINCT q, listen_idle.listener_pid FROM unnest(queues) AS q
        ON CONFLICT DO NOTHING;
    GET DIAGNOSTICS added = ROW_COUNT;
    RETURN added;
END
$$;
COMMENT ON FUNCTION pgq.listen_idle(text[], integer) IS $$listen_idle: register a LISTEN session as idle on queues. Applies when listener_pid is a
live backend (default: the calling session). Leaves one pgq.idle_listeners row per
queue for it (idempotent), so enqueues into those queues notify pgq_<queue> once this
transaction commits. Returns how many rows it added. Raises PQ400 for an invalid queue
name or a pid that is no live backend. For no lost wake-up, call
pgq.wait_for_enqueuers(queues) after this commits, then look for work, then sleep.$$;

-- unlisten_idle: deregister a LISTEN session. Applies always. Leaves no pgq.idle_listeners
-- row for listener_pid (default: the calling session) on the given queues (NULL: on any
-- queue), so enqueues there stop notifying it. Returns how many rows it removed.
-- Raises nothing.
CREATE FUNCTION pgq.unlisten_idle(
    queues text[] DEFAULT NULL, listener_pid integer DEFAULT pg_backend_pid()
) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    removed integer;
BEGIN
    DELETE FROM pgq.idle_listeners AS l
     WHERE l.listener_pid = unlisten_idle.listener_pid
       AND (unlisten_idle.queues IS NULL OR l.queue = ANY (unlisten_idle.queues));
    GET DIAGNOSTICS removed = ROW_COUNT;
    RETURN removed;
END
$$;
COMMENT ON FUNCTION pgq.unlisten_idle(text[], integer) IS $$unlisten_idle: deregister a LISTEN session. Applies always. Leaves no pgq.idle_listeners
row for listener_pid (default: the calling session) on the given queues (NULL: on any
queue), so enqueues there stop notifying it. Returns how many rows it removed.
Raises nothing.$$;

-- wait_for_enqueuers: the listener's barrier, after its pgq.listen_idle committed. Applies
-- outside any transaction that holds a doorbell key. Takes and releases each queue's key in
-- exclusive mode, one at a time, in key order: returns once every enqueuing transaction
-- that may have read the registry without this listener has ended, so a claim that starts
-- afterwards sees their jobs. Returns false when a key stayed taken past lock_timeout
-- (100 ms; an enqueuer that took it early, e.g. SET CONSTRAINTS ALL IMMEDIATE): look for
-- work, then wait briefly and call it again. Raises PQ400 for an invalid queue name.
-- A call cancelled or failing while it holds a key releases the key before the error
-- propagates: the keys are session locks, which an aborted statement does not release,
-- and pgq's pools do not reset sessions, so a key left held on a pooled connection would
-- block every enqueue into the queue until that connection closed (seen once in a soak
-- under load: producers stalled for minutes behind an idle pooled connection).
CREATE FUNCTION pgq.wait_for_enqueuers(queues text[]) RETURNS boolean
LANGUAGE plpgsql
SET lock_timeout = '100ms'
AS $$
DECLARE
    k integer;
BEGIN
    PERFORM pgq._check_queues(queues);
    FOR k IN SELECT DISTINCT pgq._doorbell_key(q) FROM unnest(queues) AS q ORDER BY 1 LOOP
        -- session-level, released at once: never holds one key while waiting for another
        PERFORM pg_advisory_lock(1885827428, k);
        PERFORM pg_advisory_unlock(1885827428, k);
    END LOOP;
    RETURN true;
EXCEPTION
    WHEN lock_not_available THEN
        RETURN false;
    WHEN query_canceled OR others THEN
        -- k: the key being taken or held when the error came; release it if it was granted
        PERFORM pg_advisory_unlock(1885827428, k)
          FROM pg_locks AS l
         WHERE l.locktype = 'advisory' AND l.pid = pg_backend_pid() AND l.granted
           AND l.classid = 1885827428 AND l.objid = k::oid AND l.objsubid = 2;
        RAISE;
END
$$;
COMMENT ON FUNCTION pgq.wait_for_enqueuers(text[]) IS $$wait_for_enqueuers: the listener's barrier, after its pgq.listen_idle committed. Applies
outside any transaction that holds a doorbell key. Takes and releases each queue's key in
exclusive mode, one at a time, in key order: returns once every enqueuing transaction
that may have read the registry without this listener has ended, so a claim that starts
afterwards sees their jobs. Returns false when a key stayed taken past lock_timeout
(100 ms; an enqueuer that took it early, e.g. SET CONSTRAINTS ALL IMMEDIATE): look for
work, then wait briefly and call it again. Raises PQ400 for an invalid queue name.
A call cancelled or failing while it holds a key releases the key before the error
propagates: the keys are session locks, which an aborted statement does not release,
and pgq's pools do not reset sessions, so a key left held on a pooled connection would
block every enqueue into the queue until that connection closed (seen once in a soak
under load: producers stalled for minutes behind an idle pooled connection).$$;

-- forget_dead_listeners: the janitor. Applies always. Leaves no pgq.idle_listeners row
-- whose session is gone (no backend with its pid, or a newer backend that reused the pid).
-- Returns how many rows it removed. Runners call it at start-up and on their safety
-- re-check, the coordinator's monitor periodically. Raises nothing.
CREATE FUNCTION pgq.forget_dead_listeners() RETURNS integer
LANGUAGE sql AS $$
    WITH gone AS (
        DELETE FROM pgq.idle_listeners AS l
         WHERE NOT EXISTS (
                   SELECT 1 FROM pg_stat_activity AS a
                    WHERE a.pid = l.listener_pid
                      -- backend_start is NULL for other roles' sessions without
                      -- pg_read_all_stats: then trust the pid alone
                      AND (a.backend_start IS NULL OR a.backend_start <= l.since))
        RETURNING 1)
    SELECT count(*)::integer FROM gone
$$;
COMMENT ON FUNCTION pgq.forget_dead_listeners() IS $$forget_dead_listeners: the janitor. Applies always. Leaves no pgq.idle_listeners row
whose session is gone (no backend with its pid, or a newer backend that reused the pid).
Returns how many rows it removed. Runners call it at start-up and on their safety
re-check, the coordinator's monitor periodically. Raises nothing.$$;

-- _first_in_transaction: true for the first inserted queued job of a queue in this
-- transaction, false afterwards. The WHEN of _500_ring_doorbell: a constraint trigger's
-- WHEN runs at INSERT time, so a bulk insert queues one commit-time check per queue, not
-- one per row. Leaves a transaction-local setting (pgq_doorbell.<queue>) as the flag, so a
-- rolled-back savepoint takes it back along with the check it queued. Raises nothing.
CREATE FUNCTION pgq._first_in_transaction(queue text) RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    IF current_setting('pgq_doorbell.' || queue, true) = 'queued' THEN
        RETURN false;
    END IF;
    PERFORM set_config('pgq_doorbell.' || queue, 'queued', true);  -- SET LOCAL, unparsed
    RETURN true;
END
$$;
COMMENT ON FUNCTION pgq._first_in_transaction(text) IS $$_first_in_transaction: true for the first inserted queued job of a queue in this
transaction, false afterwards. The WHEN of _500_ring_doorbell: a constraint trigger's
WHEN runs at INSERT time, so a bulk insert queues one commit-time check per queue, not
one per row. Leaves a transaction-local setting (pgq_doorbell.<queue>) as the flag, so a
rolled-back savepoint takes it back along with the check it queued. Raises nothing.$$;

-- _ring_doorbell: the deferred constraint trigger of an INSERT of queued jobs, run at
-- COMMIT once per queue that gained queued jobs in this transaction. Leaves a pgq_<queue>
-- notification when a listener is registered idle on the queue (always, under REPEATABLE
-- READ or SERIALIZABLE), and, under READ COMMITTED, the queue's doorbell key held in share
-- mode until the transaction ends (the handshake in this file's header). Raises nothing.
CREATE FUNCTION pgq._ring_doorbell() RETURNS trigger
LANGUAGE plpgsql VOLATILE AS $$
-- VOLATILE, and the lock and the read are separate statements: the read must take its
-- snapshot after the lock is granted.
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        PERFORM pg_notify('pgq_' || NEW.queue, '');
        RETURN NULL;
    END IF;
    -- held until the transaction ends, so a listener's barrier waits for this commit
    PERFORM pg_advisory_xact_lock_shared(1885827428, pgq._doorbell_key(NEW.queue));
    IF EXISTS (SELECT 1 FROM pgq.idle_listeners AS l WHERE l.queue = NEW.queue) THEN
        PERFORM pg_notify('pgq_' || NEW.queue, '');
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION pgq._ring_doorbell() IS $$_ring_doorbell: the deferred constraint trigger of an INSERT of queued jobs, run at
COMMIT once per queue that gained queued jobs in this transaction. Leaves a pgq_<queue>
notification when a listener is registered idle on the queue (always, under REPEATABLE
READ or SERIALIZABLE), and, under READ COMMITTED, the queue's doorbell key held in share
mode until the transaction ends (the handshake in this file's header). Raises nothing.$$;

CREATE CONSTRAINT TRIGGER _500_ring_doorbell
    AFTER INSERT ON pgq.jobs
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW
    WHEN (NEW.status = 'queued' AND pgq._first_in_transaction(NEW.queue))
    EXECUTE FUNCTION pgq._ring_doorbell();
