-- 0008_roles: the privilege model. Four NOLOGIN roles, each a bundle of the pgq.* functions
-- one kind of client needs; a DBA grants one of them to an application's login role:
--   pgq_reader    read the tables (every column but secrets: pgq.jobs.lease_token) and the
--                 read functions (stats, next_due, ...)
--   pgq_producer  pgq_reader + enqueue
--   pgq_worker    pgq_reader + what a runner calls: claim, complete, fail, heartbeat,
--                 release, progress, lease expiry, the idle doorbell, schedule firing
--   pgq_admin     all of the above + cancel, retry, pause, limits, schedules, prune
-- No role but the owner writes a table: every write goes through a SECURITY DEFINER
-- function with a pinned search_path, whose checks it cannot bypass. The read functions
-- run as their caller (who may read the tables), so PostgreSQL can still inline them.
--
-- pgq._secure() does the work and is re-run by `pgq migrate` after every run (it is
-- idempotent), so a function added by a later migration is covered as soon as it is
-- listed in pgq._function_roles; a public function missing from that list is callable by
-- its owner only (and fails a test).

-- _function_roles: the least role that may call each public pgq function (by name, every
-- overload alike); pgq_admin may call them all. Leaves nothing behind; raises nothing.
CREATE FUNCTION pgq._function_roles() RETURNS TABLE (name text, role text)
LANGUAGE sql IMMUTABLE AS $$
    VALUES ('stats', 'pgq_reader'), ('next_due', 'pgq_reader'), ('backoff', 'pgq_reader'),
           ('cron_next', 'pgq_reader'), ('next_schedule_at', 'pgq_reader'),
           ('watch_events', 'pgq_reader'), ('unwatch_events', 'pgq_reader'),
           ('enqueue', 'pgq_producer'), ('enqueue_bulk', 'pgq_producer'),
           ('enqueue_many', 'pgq_producer'),
           ('claim', 'pgq_worker'), ('claim_many', 'pgq_worker'), ('complete', 'pgq_worker'),
           ('complete_many', 'pgq_worker'), ('complete_each', 'pgq_worker'),
           ('fail', 'pgq_worker'), ('heartbeat', 'pgq_worker'), ('release', 'pgq_worker'),
           ('progress', 'pgq_worker'), ('expire_leases', 'pgq_worker'),
           ('expire_leases_detailed', 'pgq_worker'),
           ('listen_idle', 'pgq_worker'), ('unlisten_idle', 'pgq_worker'),
           ('wait_for_enqueuers', 'pgq_worker'), ('forget_dead_listeners', 'pgq_worker'),
           -- a runner upserts the schedules declared next to its handlers and fires them
           ('schedule', 'pgq_worker'), ('fire_schedules', 'pgq_worker'),
           ('fire_schedule_slots', 'pgq_worker'),
           -- retention runs leaderlessly in runners (and coordinators)
           ('prune_expired', 'pgq_worker'),
           ('cancel', 'pgq_admin'), ('retry', 'pgq_admin'), ('retry_where', 'pgq_admin'),
           ('cancel_where', 'pgq_admin'), ('pause', 'pgq_admin'), ('resume', 'pgq_admin'),
           ('set_limits', 'pgq_admin'), ('unschedule', 'pgq_admin'), ('prune', 'pgq_admin'),
           ('set_retention', 'pgq_admin')
$$;
COMMENT ON FUNCTION pgq._function_roles() IS $$_function_roles: the least role that may call each public pgq function (by name, every
overload alike); pgq_admin may call them all. Leaves nothing behind; raises nothing.$$;

-- _secure: create the four roles when missing and (re)apply the privilege model to every
-- object of schema pgq. Applies always; idempotent; `pgq migrate` runs it after applying
-- migrations. Leaves the roles pgq_reader, pgq_producer, pgq_worker, pgq_admin (NOLOGIN;
-- producer and worker are members of reader, admin of both); every public function (a
-- name without a leading _) that writes (VOLATILE), and every read not in LANGUAGE sql,
-- SECURITY DEFINER with search_path pinned to pg_catalog, pgq, pg_temp; the LANGUAGE sql
-- reads (STABLE, IMMUTABLE) SECURITY INVOKER, so they can be inlined; EXECUTE
-- revoked from PUBLIC and granted per pgq._function_roles (pgq_admin: all); internal
-- functions (SECURITY INVOKER) executable by the four roles; USAGE on the schema for them; SELECT on every table and sequence for pgq_reader (currval tells an enqueuer
-- whether it created the job), on pgq.jobs every column but lease_token; no table
-- privilege for PUBLIC. Returns one sentence per thing it could not do (a role
-- it may not create, a membership it may not grant), empty when all is done. A role
-- created at the same moment by a concurrent migrate (roles are cluster-wide) is taken as
-- created. Raises nothing of its own.
CREATE FUNCTION pgq._secure() RETURNS SETOF text
LANGUAGE plpgsql AS $$
DECLARE
    r text;
    f record;
    grantee text;
    cols text;
BEGIN
    FOREACH r IN ARRAY ARRAY['pgq_reader', 'pgq_producer', 'pgq_worker', 'pgq_admin'] LOOP
        CONTINUE WHEN EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = r);
        BEGIN
            EXECUTE format('CREATE ROLE %I NOLOGIN', r);
        EXCEPTION
            WHEN duplicate_object OR unique_violation THEN
                NULL;  -- another migrate created it just now
            WHEN insufficient_privilege THEN
                RETURN NEXT format('could not create role %s (%s): ask a superuser or a role '
                                   'with CREATEROLE to run `CREATE ROLE %s NOLOGIN`, then run '
                                   '`pgq migrate` again', r, SQLERRM, r);
        END;
    END LOOP;
    FOR r, grantee IN VALUES ('pgq_reader', 'pgq_producer'), ('pgq_reader', 'pgq_worker'),
                             ('pgq_producer', 'pgq_admin'), ('pgq_worker', 'pgq_admin') LOOP
        CONTINUE WHEN NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = r)
                   OR NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = grantee)
                   OR pg_catalog.pg_has_role(grantee, r, 'MEMBER');
        BEGIN
            EXECUTE format('GRANT %I TO %I', r, grantee);
        EXCEPTION WHEN insufficient_privilege THEN
            RETURN NEXT format('could not grant %s to %s (%s): ask a superuser to run '
                               '`GRANT %s TO %s`', r, grantee, SQLERRM, r, grantee);
        END;
    END LOOP;

    FOR f IN SELECT p.oid::regprocedure AS sig, p.proname::text AS name,
                    p.prosecdef AS definer, p.proconfig AS config, p.provolatile AS volatility,
                    l.lanname::text AS language
               FROM pg_catalog.pg_proc AS p
               JOIN pg_catalog.pg_language AS l ON l.oid = p.prolang
              WHERE p.pronamespace = 'pgq'::regnamespace AND p.prokind = 'f'
                AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend AS d
                                 WHERE d.objid = p.oid AND d.deptype = 'e')
    LOOP
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f.sig);
        IF left(f.name, 1) = '_' THEN
            -- internal, SECURITY INVOKER: they can do nothing their caller could not; the
            -- roles need them for the read functions below
            IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'pgq_reader') THEN
                EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO pgq_reader', f.sig);
            END IF;
            CONTINUE;
        END IF;
        -- pgq.stats (plpgsql) reads pg_stats_ext, which shows the owner's statistics only:
        -- as its caller it would fall back to counting history
        IF f.volatility = 'v' OR f.language <> 'sql' THEN
            IF NOT f.definer
               OR NOT 'search_path=pg_catalog, pgq, pg_temp' = ANY (coalesce(f.config, '{}')) THEN
                EXECUTE format('ALTER FUNCTION %s SECURITY DEFINER '
                               'SET search_path = pg_catalog, pgq, pg_temp', f.sig);
            END IF;
        ELSIF f.definer THEN
            -- a LANGUAGE sql read runs as its caller, who may read the tables: no
            -- SET, so PostgreSQL can inline it (a SECURITY DEFINER pgq.next_due cost 74 µs
            -- a call against 0.3 µs inlined)
            EXECUTE format('ALTER FUNCTION %s SECURITY INVOKER RESET search_path', f.sig);
        END IF;
        FOR grantee IN SELECT 'pgq_admin'
                       UNION SELECT m.role FROM pgq._function_roles() AS m WHERE m.name = f.name
        LOOP
            CONTINUE WHEN NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = grantee);
            EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %I', f.sig, grantee);
        END LOOP;
    END LOOP;

    EXECUTE 'REVOKE ALL ON ALL TABLES IN SCHEMA pgq FROM PUBLIC';
    EXECUTE 'REVOKE ALL ON ALL SEQUENCES IN SCHEMA pgq FROM PUBLIC';
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'pgq_reader') THEN
        FOREACH r IN ARRAY ARRAY['pgq_reader', 'pgq_producer', 'pgq_worker', 'pgq_admin'] LOOP
            CONTINUE WHEN NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = r);
            EXECUTE format('GRANT USAGE ON SCHEMA pgq TO %I', r);
        END LOOP;
        FOR f IN SELECT c.oid::regclass AS rel, c.relname::text AS name
                   FROM pg_catalog.pg_class AS c
                  WHERE c.relnamespace = 'pgq'::regnamespace AND c.relkind IN ('r', 'v', 'p', 'S')
        LOOP
            IF f.name = 'jobs' THEN
                -- column by column: the lease token is the secret of the runner holding it
                SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum) INTO cols
                  FROM pg_catalog.pg_attribute AS a
                 WHERE a.attrelid = f.rel AND a.attnum > 0 AND NOT a.attisdropped
                   AND a.attname <> 'lease_token';
                EXECUTE format('REVOKE SELECT ON %s FROM pgq_reader', f.rel);
                EXECUTE format('GRANT SELECT (%s) ON %s TO pgq_reader', cols, f.rel);
            ELSE
                EXECUTE format('GRANT SELECT ON %s TO pgq_reader', f.rel);
            END IF;
        END LOOP;
    END IF;
END
$$;
COMMENT ON FUNCTION pgq._secure() IS $$_secure: create the four roles when missing and (re)apply the privilege model to every
object of schema pgq. Applies always; idempotent; `pgq migrate` runs it after applying
migrations. Leaves the roles pgq_reader, pgq_producer, pgq_worker, pgq_admin (NOLOGIN;
producer and worker are members of reader, admin of both); every public function (a
name without a leading _) that writes (VOLATILE), and every read not in LANGUAGE sql,
SECURITY DEFINER with search_path pinned to pg_catalog, pgq, pg_temp; the LANGUAGE sql
reads (STABLE, IMMUTABLE) SECURITY INVOKER, so they can be inlined; EXECUTE
revoked from PUBLIC and granted per pgq._function_roles (pgq_admin: all); internal
functions (SECURITY INVOKER) executable by the four roles; USAGE on the schema for them; SELECT on every table and sequence for pgq_reader (currval tells an enqueuer
whether it created the job), on pgq.jobs every column but lease_token; no table
privilege for PUBLIC. Returns one sentence per thing it could not do (a role
it may not create, a membership it may not grant), empty when all is done. A role
created at the same moment by a concurrent migrate (roles are cluster-wide) is taken as
created. Raises nothing of its own.$$;
