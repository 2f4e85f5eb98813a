-- 0008_doorbell: an enqueue rings pgq_<queue> only when a listener of that queue is idle.
--
-- Why: a transaction that sent NOTIFY holds PostgreSQL's global notify lock from its
-- pre-commit through its commit's WAL flush, so producers that enqueue one job per
-- transaction and always NOTIFY commit one at a time (waits on Lock:object, issue #5).
--
-- Contract (replaces 0003's "every insert of a queued job notifies"):
--   * A listener that wants wake-ups for new jobs registers as idle on its queues
--     (pgq.listen_idle), keyed by the pid of its LISTEN session, and deregisters when it is
--     busy (pgq.unlisten_idle). pgq runners and coordinator long-poll waiters do this.
--   * A READ COMMITTED transaction that inserted queued jobs into a queue sends
--     pgq_<queue> at COMMIT only when some listener is registered idle on that queue.
--     REPEATABLE READ and SERIALIZABLE ones always send it (their snapshot could miss a
--     registration made after it was taken).
--   * Every UPDATE that queues jobs (retry with backoff, lease expiry, dependency release,
--     replay) still notifies unconditionally (0003), and pgq_events is unchanged.
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


-- _doorbell_key: the second half of the advisory lock key of a queue's doorbell.
CREATE FUNCTION pgq._doorbell_key(queue text) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT hashtext(queue)
$$;

COMMENT ON FUNCTION pgq._doorbell_key(text) IS
    'pgq: the advisory lock key (with class 1885827428) of a queue''s doorbell.';


-- _check_queues: raises PQ400 unless every name is a valid queue name.
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

COMMENT ON FUNCTION pgq._check_queues(text[]) IS
    'pgq: raises PQ400 unless every name is a valid queue name.';


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

COMMENT ON FUNCTION pgq.listen_idle(text[], integer) IS
    'pgq: register a LISTEN session (default: this one) as idle on queues, so enqueues '
    'notify pgq_<queue>; then call pgq.wait_for_enqueuers, look for work, sleep.';


-- unlisten_idle: deregister a LISTEN session. Applies always. Leaves no pgq.idle_listeners
-- row for listener_pid (default: the calling session) on the given queues (NULL: on any
-- queue). Returns how many rows it removed.
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

COMMENT ON FUNCTION pgq.unlisten_idle(text[], integer) IS
    'pgq: deregister a LISTEN session (default: this one) from queues (NULL: all), so '
    'enqueues there stop notifying it.';


-- wait_for_enqueuers: the listener's barrier, after its pgq.listen_idle committed. Applies
-- outside any transaction that holds a doorbell key. Takes and releases each queue's key in
-- exclusive mode, one at a time, in key order: returns once every enqueuing transaction
-- that may have read the registry without this listener has ended, so a claim that starts
-- afterwards sees their jobs. Returns false when a key stayed taken past lock_timeout
-- (an enqueuer that took it early, e.g. SET CONSTRAINTS ALL IMMEDIATE): look for work, then
-- wait briefly and call it again. Raises PQ400 for an invalid queue name.
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
EXCEPTION WHEN lock_not_available THEN
    RETURN false;
END
$$;

COMMENT ON FUNCTION pgq.wait_for_enqueuers(text[]) IS
    'pgq: barrier after pgq.listen_idle committed: waits for enqueuers that may have missed '
    'the registration; false when lock_timeout (100 ms) ran out (retry).';


-- forget_dead_listeners: the janitor. Applies always. Leaves no pgq.idle_listeners row
-- whose session is gone (no backend with its pid, or a newer backend that reused the pid).
-- Returns how many rows it removed. Runners call it at start-up and on their safety
-- re-check, the coordinator's monitor periodically.
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

COMMENT ON FUNCTION pgq.forget_dead_listeners() IS
    'pgq: delete idle-listener rows of sessions that are gone; returns how many.';


-- _first_in_transaction: true for the first inserted queued job of a queue in this
-- transaction, false afterwards. The WHEN of _500_ring_doorbell: a constraint trigger's WHEN
-- runs at INSERT time, so a bulk insert queues one commit-time check per queue, not one
-- per row. The flag is a transaction-local setting (pgq_doorbell.<queue>): a rolled-back
-- savepoint takes it back along with the check it queued.
CREATE FUNCTION pgq._first_in_transaction(queue text) RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    IF current_setting('pgq_doorbell.' || queue, true) = 'queued' THEN
        RETURN false;
    END IF;
    EXECUTE format('SET LOCAL pgq_doorbell.%I = %L', queue, 'queued');
    RETURN true;
END
$$;

COMMENT ON FUNCTION pgq._first_in_transaction(text) IS
    'pgq: true for the first queued job of a queue inserted in this transaction.';


-- _ring_doorbell: at COMMIT, once per queue that gained queued jobs in this transaction:
-- notify pgq_<queue> when a listener is registered idle on it (always, under REPEATABLE
-- READ or SERIALIZABLE). Protocol in the header above.
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

COMMENT ON FUNCTION pgq._ring_doorbell() IS
    'pgq: at commit, notify pgq_<queue> for inserted queued jobs when a listener is idle.';

CREATE CONSTRAINT TRIGGER _500_ring_doorbell
    AFTER INSERT ON pgq.jobs
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW
    WHEN (NEW.status = 'queued' AND pgq._first_in_transaction(NEW.queue))
    EXECUTE FUNCTION pgq._ring_doorbell();


-- _notify_insert (replaces 0003's): after INSERT into pgq.jobs, announce jobs created
-- already finished (dead because a parent failed) on pgq_events. Wake-ups for queued jobs
-- moved to _ring_doorbell.
CREATE OR REPLACE FUNCTION pgq._notify_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('pgq_events', json_build_object(
                'id', n.id, 'status', n.status, 'queue', n.queue, 'type', n.type)::text)
       FROM new_rows AS n
      WHERE n.status IN ('succeeded', 'dead', 'cancelled');
    RETURN NULL;
END
$$;
