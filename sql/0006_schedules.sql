-- 0006_schedules: cron schedules that create jobs, leaderlessly.
--
-- pgq.schedules holds one row per schedule. Whoever runs pgq.fire_schedules() (every runner
-- and coordinator, when the earliest next_run_at passes; or a DBA from psql) creates the
-- due jobs: the schedule rows are taken FOR UPDATE SKIP LOCKED, and the unique index on
-- (jobs.schedule, jobs.scheduled_for) makes a second job for one slot impossible, however
-- many callers run at once and whatever their clocks and snapshots say.
--
-- Time zones. Slots are local wall-clock times in the schedule's time zone:
--   * a local time that does not exist (DST starts: 02:30 on the spring-forward day in
--     Europe/Berlin) is skipped;
--   * a local time that occurs twice (DST ends) fires once, at its first occurrence.
-- So a fixed-time job runs once a day on both transition days. The price: a schedule that
-- repeats within the hour (`*/5 * * * *`) in a DST zone is silent during the repeated hour;
-- give interval-like schedules timezone 'UTC'. (Vixie cron instead runs the skipped times
-- at the jump and repeats wildcard-hour jobs; croniter repeats fixed-time jobs too.)
--
-- Day of month and day of week: when both are restricted (neither covers its whole range)
-- a day matching either fires, as in Vixie cron and croniter; otherwise both must match.
--
-- Notifications: pgq.schedule and pgq.unschedule send `pgq_schedules` (payload: the
-- schedule's name), so every process re-reads pgq.next_schedule_at() and re-arms its timer.
--
-- Refusals are PQ400 with the argument at fault as the error's COLUMN (cron, timezone,
-- catch_up, name, paused), so the HTTP API can name the field.


-- Jobs remember which schedule slot created them; one job per (schedule, slot).
ALTER TABLE pgq.jobs
    ADD COLUMN schedule      text,
    ADD COLUMN scheduled_for timestamptz,
    ADD CONSTRAINT jobs_schedule_has_slot CHECK ((schedule IS NULL) = (scheduled_for IS NULL));

COMMENT ON COLUMN pgq.jobs.schedule IS 'the pgq.schedules name that created this job, or NULL';
COMMENT ON COLUMN pgq.jobs.scheduled_for IS 'the schedule slot this job was created for, or NULL';

-- Exactly one job per (schedule, slot): pgq.fire_schedules inserts ON CONFLICT DO NOTHING.
-- Partial, so jobs without a schedule (nearly all) cost this index nothing.
CREATE UNIQUE INDEX jobs_schedule_slot_idx ON pgq.jobs (schedule, scheduled_for)
    WHERE schedule IS NOT NULL;


CREATE TABLE pgq.schedules (
    name            text        PRIMARY KEY,
    cron            text        NOT NULL,
    timezone        text        NOT NULL DEFAULT 'UTC',
    job_type        text        NOT NULL,
    args            jsonb       NOT NULL DEFAULT '{}',
    queue           text        NOT NULL DEFAULT 'default',
    priority        integer     NOT NULL DEFAULT 0,
    max_attempts    integer     NOT NULL DEFAULT 10,
    timeout_seconds integer     NOT NULL DEFAULT 300,
    -- which missed slots pgq.fire_schedules creates jobs for (see there)
    catch_up        text        NOT NULL DEFAULT 'latest',
    -- a paused schedule creates no jobs; unpausing starts again from the next slot
    paused          boolean     NOT NULL DEFAULT false,
    -- the first slot not yet fired
    next_run_at     timestamptz NOT NULL,
    -- the latest slot a job was created for (NULL before the first)
    last_run_at     timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),

    CONSTRAINT schedules_name_valid CHECK (name ~ '^[a-z][a-z0-9_.:-]{0,127}$'),
    CONSTRAINT schedules_catch_up_known CHECK (catch_up IN ('latest', 'all', 'none')),
    CONSTRAINT schedules_queue_name CHECK (queue ~ '^[a-z][a-z0-9_]{0,47}$'),
    CONSTRAINT schedules_type_name CHECK (job_type ~ '^[A-Za-z0-9_.:-]{1,128}$'),
    CONSTRAINT schedules_args_object CHECK (jsonb_typeof(args) = 'object'),
    CONSTRAINT schedules_priority_range CHECK (priority BETWEEN -32768 AND 32767),
    CONSTRAINT schedules_max_attempts_range CHECK (max_attempts BETWEEN 1 AND 1000),
    CONSTRAINT schedules_timeout_range CHECK (timeout_seconds BETWEEN 1 AND 86400)
);

COMMENT ON TABLE pgq.schedules IS
    'pgq: cron schedules; change them with pgq.schedule / pgq.unschedule, fire with pgq.fire_schedules.';

-- pgq.next_schedule_at and pgq.fire_schedules: the earliest unpaused slot.
CREATE INDEX schedules_due_idx ON pgq.schedules (next_run_at) WHERE NOT paused;


-- _cron_value: one number or name of a cron field. Leaves nothing behind. Raises PQ400 for
-- an unknown name or a number outside lo..hi.
CREATE FUNCTION pgq._cron_value(
    token text, what text, lo integer, hi integer, names text[], name_base integer
) RETURNS integer
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    v integer;
BEGIN
    IF token ~ '^[0-9]{1,6}$' THEN
        v := token::integer;
    ELSE
        v := array_position(names, token) - 1 + name_base;
        IF v IS NULL THEN
            RAISE EXCEPTION 'cron % field: % is not a number or a known name', what,
                            quote_literal(token)
                USING ERRCODE = 'PQ400', COLUMN = 'cron';
        END IF;
    END IF;
    IF v NOT BETWEEN lo AND hi THEN
        RAISE EXCEPTION 'cron % field: % is out of range %-%', what, v, lo, hi
            USING ERRCODE = 'PQ400', COLUMN = 'cron';
    END IF;
    RETURN v;
END
$$;
COMMENT ON FUNCTION pgq._cron_value(text, text, integer, integer, text[], integer) IS $$_cron_value: one number or name of a cron field. Leaves nothing behind. Raises PQ400 for
an unknown name or a number outside lo..hi.$$;


-- _cron_field: one field of a cron expression as the sorted set of values it allows.
-- Accepts `*`, numbers, names (from `names`, the first meaning `name_base`), ranges `a-b`,
-- steps `*/n`, `a-b/n` and `a/n` (= a-hi/n), and comma lists of those. Leaves nothing
-- behind. Raises PQ400 naming the field for anything else or a value outside lo..hi.
CREATE FUNCTION pgq._cron_field(
    field text, what text, lo integer, hi integer, names text[] DEFAULT NULL,
    name_base integer DEFAULT 0
) RETURNS integer[]
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    part text;
    m text[];
    first_v integer;
    last_v integer;
    step integer;
    vals integer[] := '{}';
    bounds text[];
BEGIN
    FOREACH part IN ARRAY string_to_array(lower(field), ',') LOOP
        m := regexp_match(part, '^(\*|[a-z0-9]+(?:-[a-z0-9]+)?)(?:/([0-9]{1,6}))?$');
        IF m IS NULL THEN
            RAISE EXCEPTION 'cron % field % is invalid', what, quote_literal(part)
                USING ERRCODE = 'PQ400', COLUMN = 'cron',
                      HINT = 'use *, a number or name, a range a-b, a step */n or a-b/n, or a list';
        END IF;
        step := coalesce(m[2]::integer, 1);
        IF step < 1 THEN
            RAISE EXCEPTION 'cron % field %: the step must be at least 1', what, quote_literal(part)
                USING ERRCODE = 'PQ400', COLUMN = 'cron';
        END IF;
        IF m[1] = '*' THEN
            first_v := lo;
            last_v := hi;
        ELSE
            bounds := string_to_array(m[1], '-');
            first_v := pgq._cron_value(bounds[1], what, lo, hi, names, name_base);
            IF cardinality(bounds) = 2 THEN
                last_v := pgq._cron_value(bounds[2], what, lo, hi, names, name_base);
            ELSIF m[2] IS NOT NULL THEN
                last_v := hi;  -- `a/n`: from a to the end of the range
            ELSE
                last_v := first_v;
            END IF;
            IF first_v > last_v THEN
                RAISE EXCEPTION 'cron % field %: the range runs backwards', what, quote_literal(part)
                    USING ERRCODE = 'PQ400', COLUMN = 'cron';
            END IF;
        END IF;
        vals := vals || ARRAY(SELECT generate_series(first_v, last_v, step));
    END LOOP;
    RETURN ARRAY(SELECT DISTINCT v FROM unnest(vals) AS v ORDER BY v);
END
$$;
COMMENT ON FUNCTION pgq._cron_field(text, text, integer, integer, text[], integer) IS $$_cron_field: one field of a cron expression as the sorted set of values it allows.
Accepts `*`, numbers, names (from `names`, the first meaning `name_base`), ranges `a-b`,
steps `*/n`, `a-b/n` and `a/n` (= a-hi/n), and comma lists of those. Leaves nothing
behind. Raises PQ400 naming the field for anything else or a value outside lo..hi.$$;


-- _cron_parse: a cron expression as the sets of seconds, minutes, hours, days of month,
-- months and days of week it allows (Sunday = 0, 7 accepted for it), and whether a day must
-- match either day field (both restricted, Vixie cron's rule) rather than both. Accepts 5
-- fields, 6 with a leading second, and @yearly @annually @monthly @weekly @daily @midnight
-- @hourly. Leaves nothing behind. Raises PQ400 naming the problem.
CREATE FUNCTION pgq._cron_parse(
    cron text,
    OUT seconds integer[], OUT minutes integer[], OUT hours integer[], OUT days integer[],
    OUT months integer[], OUT weekdays integer[], OUT day_or boolean
)
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    expr text := lower(btrim(cron));
    f text[];
BEGIN
    IF expr IS NULL OR expr = '' THEN
        RAISE EXCEPTION 'cron expression is required' USING ERRCODE = 'PQ400', COLUMN = 'cron';
    END IF;
    expr := CASE expr
        WHEN '@yearly' THEN '0 0 1 1 *'
        WHEN '@annually' THEN '0 0 1 1 *'
        WHEN '@monthly' THEN '0 0 1 * *'
        WHEN '@weekly' THEN '0 0 * * 0'
        WHEN '@daily' THEN '0 0 * * *'
        WHEN '@midnight' THEN '0 0 * * *'
        WHEN '@hourly' THEN '0 * * * *'
        ELSE expr END;
    f := regexp_split_to_array(expr, '\s+');
    IF cardinality(f) = 5 THEN
        f := '0'::text || f;
    ELSIF cardinality(f) <> 6 THEN
        RAISE EXCEPTION 'cron expression % has % fields', quote_literal(left(cron, 200)),
                        cardinality(f)
            USING ERRCODE = 'PQ400', COLUMN = 'cron',
                  HINT = 'use 5 fields (minute hour day-of-month month day-of-week), '
                         '6 with a leading second, or @hourly, @daily, @weekly, @monthly, @yearly';
    END IF;
    seconds := pgq._cron_field(f[1], 'second', 0, 59);
    minutes := pgq._cron_field(f[2], 'minute', 0, 59);
    hours := pgq._cron_field(f[3], 'hour', 0, 23);
    days := pgq._cron_field(f[4], 'day-of-month', 1, 31);
    months := pgq._cron_field(f[5], 'month', 1, 12,
        '{jan,feb,mar,apr,may,jun,jul,aug,sep,oct,nov,dec}', 1);
    weekdays := pgq._cron_field(f[6], 'day-of-week', 0, 7, '{sun,mon,tue,wed,thu,fri,sat}', 0);
    -- 7 is Sunday too
    weekdays := ARRAY(SELECT DISTINCT d % 7 FROM unnest(weekdays) AS d ORDER BY 1);
    day_or := cardinality(days) < 31 AND cardinality(weekdays) < 7;
END
$$;
COMMENT ON FUNCTION pgq._cron_parse(text) IS $$_cron_parse: a cron expression as the sets of seconds, minutes, hours, days of month,
months and days of week it allows (Sunday = 0, 7 accepted for it), and whether a day must
match either day field (both restricted, Vixie cron's rule) rather than both. Accepts 5
fields, 6 with a leading second, and @yearly @annually @monthly @weekly @daily @midnight
@hourly. Leaves nothing behind. Raises PQ400 naming the problem.$$;


-- _check_timezone: raises PQ400 unless tz is a time zone PostgreSQL knows. Leaves nothing
-- behind.
CREATE FUNCTION pgq._check_timezone(tz text) RETURNS void
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF tz IS NULL THEN
        RAISE EXCEPTION 'timezone must not be NULL' USING ERRCODE = 'PQ400', COLUMN = 'timezone';
    END IF;
    PERFORM now() AT TIME ZONE tz;
EXCEPTION WHEN invalid_parameter_value THEN
    RAISE EXCEPTION 'timezone % is not a known time zone', quote_literal(left(tz, 100))
        USING ERRCODE = 'PQ400', COLUMN = 'timezone', HINT = 'use an IANA name such as UTC or Europe/Berlin';
END
$$;
COMMENT ON FUNCTION pgq._check_timezone(text) IS $$_check_timezone: raises PQ400 unless tz is a time zone PostgreSQL knows. Leaves nothing
behind.$$;


-- cron_next: the first slot of a cron expression strictly after `after`, in `timezone`.
-- Applies to any expression _cron_parse accepts. Walks local days forward (skipping whole
-- months that cannot match), and within a matching day the allowed hours, minutes and
-- seconds in order; a local time that does not exist is skipped and one that occurs twice
-- stands for its first occurrence. Leaves nothing behind. Returns NULL when nothing
-- matches within ten years (e.g. 30 February). Raises PQ400 for a bad expression or zone.
CREATE FUNCTION pgq.cron_next(cron text, after timestamptz, timezone text DEFAULT 'UTC')
RETURNS timestamptz
LANGUAGE plpgsql STABLE AS $$
DECLARE
    c record;
    tz text := timezone;
    start_local timestamp;
    day date;
    last_day date;
    first_day boolean := true;
    h integer;
    mi integer;
    s integer;
    local_t timestamp;
    at_t timestamptz;
    earlier timestamptz;
    gap interval;
BEGIN
    IF after IS NULL THEN
        RAISE EXCEPTION 'cron_next: after must not be NULL' USING ERRCODE = 'PQ400';
    END IF;
    SELECT * INTO c FROM pgq._cron_parse(cron);
    PERFORM pgq._check_timezone(tz);
    start_local := after AT TIME ZONE tz;
    day := start_local::date;
    last_day := day + interval '10 years';
    WHILE day <= last_day LOOP
        IF NOT extract(month FROM day)::integer = ANY (c.months) THEN
            day := date_trunc('month', day) + interval '1 month';
            first_day := false;
            CONTINUE;
        END IF;
        IF (CASE WHEN c.day_or
                 THEN extract(day FROM day)::integer = ANY (c.days)
                      OR extract(dow FROM day)::integer = ANY (c.weekdays)
                 ELSE extract(day FROM day)::integer = ANY (c.days)
                      AND extract(dow FROM day)::integer = ANY (c.weekdays) END) THEN
            FOREACH h IN ARRAY c.hours LOOP
                CONTINUE WHEN first_day AND h < extract(hour FROM start_local);
                FOREACH mi IN ARRAY c.minutes LOOP
                    CONTINUE WHEN first_day AND h = extract(hour FROM start_local)
                                  AND mi < extract(minute FROM start_local);
                    FOREACH s IN ARRAY c.seconds LOOP
                        local_t := day + make_interval(hours => h, mins => mi, secs => s);
                        CONTINUE WHEN local_t <= start_local;
                        -- PostgreSQL reads an ambiguous local time as the later instant
                        -- and a missing one with the offset from before the jump.
                        at_t := local_t AT TIME ZONE tz;
                        CONTINUE WHEN (at_t AT TIME ZONE tz) <> local_t;  -- does not exist
                        -- An earlier instant with the same local time (DST ended)?
                        gap := (at_t - interval '3 hours') AT TIME ZONE tz
                               - ((at_t - interval '3 hours') AT TIME ZONE 'UTC')
                               - ((at_t AT TIME ZONE tz) - (at_t AT TIME ZONE 'UTC'));
                        IF gap > interval '0' THEN
                            earlier := at_t - gap;
                            IF (earlier AT TIME ZONE tz) = local_t THEN
                                at_t := earlier;
                            END IF;
                        END IF;
                        IF at_t > after THEN
                            RETURN at_t;
                        END IF;
                    END LOOP;
                END LOOP;
            END LOOP;
        END IF;
        day := day + 1;
        first_day := false;
    END LOOP;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION pgq.cron_next(text, timestamptz, text) IS $$cron_next: the first slot of a cron expression strictly after `after`, in `timezone`.
Applies to any expression _cron_parse accepts. Walks local days forward (skipping whole
months that cannot match), and within a matching day the allowed hours, minutes and
seconds in order; a local time that does not exist is skipped and one that occurs twice
stands for its first occurrence. Leaves nothing behind. Returns NULL when nothing
matches within ten years (e.g. 30 February). Raises PQ400 for a bad expression or zone.$$;


-- schedule: create the schedule `name`, or replace its definition. Applies always (PQ400
-- for a bad name, cron expression, time zone, catch_up or job field, or a cron expression
-- that never fires). Leaves the row with next_run_at = the first slot after now, except
-- that a replacement which keeps cron, timezone and paused keeps next_run_at (so a runner
-- that re-declares its schedules at start does not skip a slot missed while it was down),
-- and last_run_at and created_at are kept; sends pgq_schedules with the name.
CREATE FUNCTION pgq.schedule(
    name text,
    cron text,
    job_type text,
    args jsonb DEFAULT '{}',
    queue text DEFAULT 'default',
    timezone text DEFAULT 'UTC',
    catch_up text DEFAULT 'latest',
    priority integer DEFAULT 0,
    max_attempts integer DEFAULT 10,
    timeout_seconds integer DEFAULT 300,
    paused boolean DEFAULT false
) RETURNS pgq.schedules
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    problem text := pgq._invalid_job(job_type, args, queue, priority, now(), max_attempts,
                                     timeout_seconds);
    first_slot timestamptz;
    s pgq.schedules;
BEGIN
    IF name IS NULL OR name !~ '^[a-z][a-z0-9_.:-]{0,127}$' THEN
        RAISE EXCEPTION 'schedule name % is invalid', coalesce(quote_literal(left(name, 140)), 'NULL')
            USING ERRCODE = 'PQ400',
                  HINT = 'use a lowercase letter then up to 127 of a-z 0-9 _ . : -', COLUMN = 'name';
    END IF;
    IF problem IS NOT NULL THEN
        RAISE EXCEPTION 'cannot schedule %: %', name, problem USING ERRCODE = 'PQ400';
    END IF;
    IF catch_up IS NULL OR catch_up NOT IN ('latest', 'all', 'none') THEN
        RAISE EXCEPTION 'catch_up % is invalid', coalesce(quote_literal(left(catch_up, 40)), 'NULL')
            USING ERRCODE = 'PQ400', HINT = 'use latest, all or none', COLUMN = 'catch_up';
    END IF;
    IF paused IS NULL THEN
        RAISE EXCEPTION 'paused must not be NULL' USING ERRCODE = 'PQ400', COLUMN = 'paused';
    END IF;
    first_slot := pgq.cron_next(cron, now(), timezone);  -- PQ400 for a bad cron or zone
    IF first_slot IS NULL THEN
        RAISE EXCEPTION 'cron expression % never fires', quote_literal(cron)
            USING ERRCODE = 'PQ400', HINT = 'check the day of month against the months',
                  COLUMN = 'cron';
    END IF;

    INSERT INTO pgq.schedules AS t (name, cron, timezone, job_type, args, queue, priority,
                                    max_attempts, timeout_seconds, catch_up, paused, next_run_at)
    VALUES (name, btrim(cron), timezone, job_type, args, queue, priority, max_attempts,
            timeout_seconds, catch_up, paused, first_slot)
    ON CONFLICT ON CONSTRAINT schedules_pkey DO UPDATE
       SET cron = excluded.cron, timezone = excluded.timezone, job_type = excluded.job_type,
           args = excluded.args, queue = excluded.queue, priority = excluded.priority,
           max_attempts = excluded.max_attempts, timeout_seconds = excluded.timeout_seconds,
           catch_up = excluded.catch_up, paused = excluded.paused,
           next_run_at = CASE WHEN (t.cron, t.timezone, t.paused)
                                   = (excluded.cron, excluded.timezone, excluded.paused)
                              THEN t.next_run_at ELSE excluded.next_run_at END,
           updated_at = now()
    RETURNING * INTO s;
    PERFORM pg_notify('pgq_schedules', s.name);
    RETURN s;
END
$$;
COMMENT ON FUNCTION pgq.schedule(text, text, text, jsonb, text, text, text, integer, integer, integer, boolean) IS $$schedule: create the schedule `name`, or replace its definition. Applies always (PQ400
for a bad name, cron expression, time zone, catch_up or job field, or a cron expression
that never fires). Leaves the row with next_run_at = the first slot after now, except
that a replacement which keeps cron, timezone and paused keeps next_run_at (so a runner
that re-declares its schedules at start does not skip a slot missed while it was down),
and last_run_at and created_at are kept; sends pgq_schedules with the name.$$;


-- unschedule: delete the schedule `name`. Applies when it exists (PQ404 otherwise). Leaves
-- its jobs as they are (they keep `schedule` = name) and sends pgq_schedules.
CREATE FUNCTION pgq.unschedule(name text) RETURNS pgq.schedules
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    s pgq.schedules;
BEGIN
    DELETE FROM pgq.schedules AS t WHERE t.name = name RETURNING * INTO s;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'schedule % does not exist', coalesce(quote_literal(left(name, 140)), 'NULL')
            USING ERRCODE = 'PQ404';
    END IF;
    PERFORM pg_notify('pgq_schedules', s.name);
    RETURN s;
END
$$;
COMMENT ON FUNCTION pgq.unschedule(text) IS $$unschedule: delete the schedule `name`. Applies when it exists (PQ404 otherwise). Leaves
its jobs as they are (they keep `schedule` = name) and sends pgq_schedules.$$;


-- _latest_slot: the latest slot of a schedule at or before `upto`, no earlier than `since`
-- (a slot known to be due), found by looking forward from ever earlier starting points so
-- that a dense schedule down for a long time costs a few cron_next calls, not one per slot.
-- Leaves nothing behind.
CREATE FUNCTION pgq._latest_slot(cron text, timezone text, since timestamptz, upto timestamptz)
RETURNS timestamptz
LANGUAGE plpgsql STABLE AS $$
DECLARE
    win interval;
    slot timestamptz;
    nxt timestamptz;
BEGIN
    FOREACH win IN ARRAY ARRAY['1 minute', '1 hour', '1 day', '32 days', '1 year',
                               '10 years']::interval[] LOOP
        slot := pgq.cron_next(cron, greatest(since, upto - win) - interval '1 microsecond',
                              timezone);
        IF slot <= upto THEN
            LOOP
                nxt := pgq.cron_next(cron, slot, timezone);
                EXIT WHEN nxt IS NULL OR nxt > upto;
                slot := nxt;
            END LOOP;
            RETURN slot;
        END IF;
        EXIT WHEN upto - win <= since;
    END LOOP;
    RETURN since;
END
$$;
COMMENT ON FUNCTION pgq._latest_slot(text, text, timestamptz, timestamptz) IS $$_latest_slot: the latest slot of a schedule at or before `upto`, no earlier than `since`
(a slot known to be due), found by looking forward from ever earlier starting points so
that a dense schedule down for a long time costs a few cron_next calls, not one per slot.
Leaves nothing behind.$$;


-- fire_schedule_slots: create the due jobs of every unpaused schedule whose next_run_at
-- has passed, and return one row per job created. Per catch_up, of the slots from
-- next_run_at up to now: 'latest' the most recent one; 'all' every one, at most 1,000 per
-- call (next_run_at then stays in the past and the next call goes on); 'none' those less
-- than 60 s old. Schedules another caller is firing are skipped (FOR UPDATE SKIP LOCKED),
-- and a slot that already has its job gets none (unique (schedule, scheduled_for)).
-- Leaves each fired schedule with next_run_at = its first slot after the ones handled and
-- last_run_at = the latest slot handled (paused if cron_next finds no slot in ten years);
-- each job has run_at = scheduled_for = its slot.
CREATE FUNCTION pgq.fire_schedule_slots()
RETURNS TABLE (schedule text, scheduled_for timestamptz, job_id bigint, job_type text,
               queue text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    s pgq.schedules;
    slot timestamptz;
    handled timestamptz;
    made integer;
    new_id bigint;
BEGIN
    FOR s IN
        SELECT * FROM pgq.schedules AS t
         WHERE NOT t.paused AND t.next_run_at <= now()
         ORDER BY t.next_run_at
           FOR UPDATE SKIP LOCKED
    LOOP
        handled := NULL;
        made := 0;
        slot := CASE s.catch_up
            WHEN 'latest' THEN pgq._latest_slot(s.cron, s.timezone, s.next_run_at, now())
            WHEN 'none' THEN CASE WHEN s.next_run_at > now() - interval '60 seconds'
                                  THEN s.next_run_at
                                  ELSE pgq.cron_next(s.cron, now() - interval '60 seconds',
                                                     s.timezone) END
            ELSE s.next_run_at END;
        WHILE slot <= now() AND made < 1000 LOOP
            INSERT INTO pgq.jobs AS j (type, args, queue, priority, run_at, max_attempts,
                                       timeout_seconds, schedule, scheduled_for)
            VALUES (s.job_type, s.args, s.queue, s.priority, slot, s.max_attempts,
                    s.timeout_seconds, s.name, slot)
            ON CONFLICT (schedule, scheduled_for) WHERE schedule IS NOT NULL DO NOTHING
            RETURNING j.id INTO new_id;
            IF FOUND THEN
                schedule := s.name;
                scheduled_for := slot;
                job_id := new_id;
                job_type := s.job_type;
                queue := s.queue;
                RETURN NEXT;
            END IF;
            handled := slot;
            made := made + 1;
            EXIT WHEN s.catch_up = 'latest';
            slot := pgq.cron_next(s.cron, slot, s.timezone);
        END LOOP;
        IF s.catch_up = 'latest' THEN
            slot := pgq.cron_next(s.cron, handled, s.timezone);
        END IF;
        -- No slot within ten years (cron_next gave up): pause rather than stay due forever.
        UPDATE pgq.schedules AS t
           SET next_run_at = coalesce(slot, t.next_run_at),
               last_run_at = coalesce(handled, t.last_run_at),
               paused = t.paused OR slot IS NULL
         WHERE t.name = s.name;
    END LOOP;
END
$$;
COMMENT ON FUNCTION pgq.fire_schedule_slots() IS $$fire_schedule_slots: create the due jobs of every unpaused schedule whose next_run_at
has passed, and return one row per job created. Per catch_up, of the slots from
next_run_at up to now: 'latest' the most recent one; 'all' every one, at most 1,000 per
call (next_run_at then stays in the past and the next call goes on); 'none' those less
than 60 s old. Schedules another caller is firing are skipped (FOR UPDATE SKIP LOCKED),
and a slot that already has its job gets none (unique (schedule, scheduled_for)).
Leaves each fired schedule with next_run_at = its first slot after the ones handled and
last_run_at = the latest slot handled (paused if cron_next finds no slot in ten years);
each job has run_at = scheduled_for = its slot.$$;


-- fire_schedules: pgq.fire_schedule_slots for psql and DESIGN's signature. Applies and
-- leaves what fire_schedule_slots does (safe to call from many sessions at once); returns
-- how many jobs it created.
CREATE FUNCTION pgq.fire_schedules() RETURNS integer
LANGUAGE sql AS $$
    SELECT count(*)::integer FROM pgq.fire_schedule_slots()
$$;
COMMENT ON FUNCTION pgq.fire_schedules() IS $$fire_schedules: pgq.fire_schedule_slots for psql and DESIGN's signature. Applies and
leaves what fire_schedule_slots does (safe to call from many sessions at once); returns
how many jobs it created.$$;


-- next_schedule_at: the earliest next_run_at of an unpaused schedule (NULL when none), which
-- runners and coordinators sleep until before calling pgq.fire_schedules. Reads
-- schedules_due_idx; leaves nothing behind.
CREATE FUNCTION pgq.next_schedule_at() RETURNS timestamptz
LANGUAGE sql STABLE AS $$
    SELECT min(next_run_at) FROM pgq.schedules WHERE NOT paused
$$;
COMMENT ON FUNCTION pgq.next_schedule_at() IS $$next_schedule_at: the earliest next_run_at of an unpaused schedule (NULL when none), which
runners and coordinators sleep until before calling pgq.fire_schedules. Reads
schedules_due_idx; leaves nothing behind.$$;
