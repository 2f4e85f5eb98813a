-- 0003_notify: statement-level triggers that turn job changes into notifications.
--
-- pgq_<queue>  payload ''. Sent when jobs enter `queued` in that queue, due now or later
--              (insert, dependency release, retry with backoff, lease expiry, replay), so
--              idle runners claim or re-arm their timer. One per queue per statement, and
--              Postgres folds identical (channel, payload) pairs within a transaction, so
--              a transaction that queues thousands of jobs sends one per queue. Updates
--              that queue nothing (claims, heartbeats, completions) send none.
-- pgq_events   payload {"id", "status", "queue", "type"}: one per job that reaches
--              succeeded, dead or cancelled (including cancellation of a running job), for
--              waiters and for the runner that must stop a cancelled handler. Never args
--              or results, so it stays far below NOTIFY's 8000-byte limit.
--
-- A transition table needs a single-event trigger, hence one trigger per event.


-- _notify_insert: after INSERT into pgq.jobs, wake the queues that gained queued jobs and
-- announce jobs created already finished (dead because a parent failed).
CREATE FUNCTION pgq._notify_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('pgq_' || q.queue, '')
       FROM (SELECT DISTINCT n.queue FROM new_rows AS n WHERE n.status = 'queued') AS q;
    PERFORM pg_notify('pgq_events', json_build_object(
                'id', n.id, 'status', n.status, 'queue', n.queue, 'type', n.type)::text)
       FROM new_rows AS n
      WHERE n.status IN ('succeeded', 'dead', 'cancelled');
    RETURN NULL;
END
$$;

CREATE TRIGGER _500_notify_insert
    AFTER INSERT ON pgq.jobs
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION pgq._notify_insert();


-- _notify_update: after UPDATE of pgq.jobs, wake the queues where jobs entered `queued`
-- and announce every job that reached a terminal status.
CREATE FUNCTION pgq._notify_update() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('pgq_' || q.queue, '')
       FROM (SELECT DISTINCT n.queue
               FROM new_rows AS n JOIN old_rows AS o ON o.id = n.id
              WHERE n.status = 'queued' AND o.status <> 'queued') AS q;
    PERFORM pg_notify('pgq_events', json_build_object(
                'id', n.id, 'status', n.status, 'queue', n.queue, 'type', n.type)::text)
       FROM new_rows AS n JOIN old_rows AS o ON o.id = n.id
      WHERE n.status IN ('succeeded', 'dead', 'cancelled') AND n.status <> o.status
      ORDER BY n.id;
    RETURN NULL;
END
$$;

CREATE TRIGGER _500_notify_update
    AFTER UPDATE ON pgq.jobs
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION pgq._notify_update();
