-- 0007_release: hand a running job back without spending its attempt.


-- release: running → queued now, for a job its runner gave up on for reasons of its own
-- (shutdown after the grace period), not because the job failed. Applies when the job is
-- running, held by worker_id and, when attempt is given, on that attempt. attempts never
-- goes down (fencing relies on it), so the interrupted attempt is given back by raising
-- max_attempts by one: a job released on its last attempt runs again instead of going
-- dead. Leaves run_at = now(), the lease cleared, the reason in last_error and appended
-- to errors (kind "released"), and a pgq_<queue> wake-up so another runner takes it at once.
-- Raises PQ404 (no such job) or PQ409 (not running, another holder, another attempt).
CREATE FUNCTION pgq.release(
    job_id bigint,
    worker_id text,
    reason jsonb DEFAULT NULL,
    attempt integer DEFAULT NULL
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
           errors = t.errors || jsonb_build_array(
               pgq._error_entry(coalesce(reason, '"released by its runner"'), t.attempts)
               || '{"kind": "released"}'),
           lease_expires_at = NULL,
           updated_at = now()
     WHERE t.id = job_id AND t.status = 'running' AND t.worker_id = release.worker_id
       AND (attempt IS NULL OR t.attempts = attempt)
    RETURNING * INTO j;
    IF NOT FOUND THEN
        PERFORM pgq._refuse(job_id, worker_id, attempt, 'release');
    END IF;
    RETURN j;
END
$$;
COMMENT ON FUNCTION pgq.release(bigint, text, jsonb, integer) IS
    'release: running → queued now without spending the attempt (max_attempts + 1); fenced like complete.';
