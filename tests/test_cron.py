"""pgq.cron_next against a reference implementation (croniter), DST included.

Outside DST transitions pgq.cron_next must agree with croniter exactly. Around transitions
pgq follows DESIGN ("a local time that occurs twice fires once, a local time that does not
occur is skipped") where croniter fires a repeated fixed time twice and moves a skipped one
to the jump, so there the reference is croniter's wall-clock slots (naive local times)
mapped to instants by that rule with zoneinfo: skipped when the local time does not exist,
its first occurrence when it exists twice. Hand-written cases pin the rule down too.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import asyncpg
import pytest
from croniter import croniter

from pgq.errors import InvalidArgument, translate

EXPRESSIONS = [
    "* * * * *",
    "*/15 * * * *",
    "0 * * * *",
    "0 0 * * *",
    "30 2 * * *",
    "0 9 * * mon-fri",
    "0 9 * * 1-5",
    "15 14 1 * *",
    "0 22 * * 1-5",
    "23 0-20/2 * * *",
    "5 4 * * sun",
    "0 0,12 1 */2 *",
    "0 4 8-14 * *",
    "0 0 1,15 * 3",
    "0 0 * * 7",
    "0 0 * * 0",
    "59 23 31 12 *",
    "0 0 29 2 *",
    "0 0 31 * *",
    "0 12 * jan,jul *",
    "0 12 * JAN-MAR *",
    "*/7 * * * *",
    "1-30/5 * * * *",
    "5/15 * * * *",
    "0 */3 * * *",
    "0 8-18 * * mon,wed,fri",
    "0 0 1 1 *",
    "@yearly",
    "@annually",
    "@monthly",
    "@weekly",
    "@daily",
    "@midnight",
    "@hourly",
    "0 0 13 * fri",
    "0 0 */2 * *",
    "0 0 1-7 * 1",
    "0 6 * * sat,sun",
    "45 23 * * 6",
    "*/10 9-17 * * 1-5",
    "0 0 1 */3 *",
    "0 12 15 6 *",
    "10,20,30 * * * *",
    "0 0 * 2 *",
    "0 0 28-31 * *",
    "0 5 * * 5-7",
    "0 0 */10 * mon",
    "0 0 * * */2",
    "30 1 * * *",
    "0 2 * * *",
    "0,30 1-3 * * *",
    # six fields: a leading second
    "*/10 * * * * *",
    "30 0 * * * *",
    "0,30 */5 * * * *",
    "15 30 2 * * *",
    "0 0 0 1 1 *",
    "*/20 0 3 * * sun",
]

STARTS = [
    datetime(2026, 1, 1, 0, 0, 0, tzinfo=UTC),
    datetime(2026, 2, 28, 23, 59, 59, 500000, tzinfo=UTC),
    datetime(2026, 5, 15, 12, 34, 56, tzinfo=UTC),
    datetime(2026, 6, 30, 23, 0, 0, tzinfo=UTC),
    datetime(2026, 12, 31, 23, 59, 30, tzinfo=UTC),
    datetime(2027, 7, 4, 8, 0, 0, 250000, tzinfo=UTC),
    datetime(2028, 2, 28, 10, 0, 0, tzinfo=UTC),
    datetime(2031, 9, 9, 9, 9, 9, tzinfo=UTC),
]

# Instants around the 2026 transitions: Europe/Berlin moves 02:00→03:00 on 29 March
# (01:00 UTC) and 03:00→02:00 on 25 October (01:00 UTC); America/New_York 02:00→03:00 on
# 8 March (07:00 UTC) and 02:00→01:00 on 1 November (06:00 UTC).
DST_STARTS = {
    "Europe/Berlin": [
        datetime(2026, 3, 28, 22, 0, tzinfo=UTC),
        datetime(2026, 3, 29, 0, 45, tzinfo=UTC),
        datetime(2026, 3, 29, 1, 0, tzinfo=UTC),
        datetime(2026, 10, 24, 22, 0, tzinfo=UTC),
        datetime(2026, 10, 25, 0, 10, tzinfo=UTC),
        datetime(2026, 10, 25, 0, 45, tzinfo=UTC),
        datetime(2026, 10, 25, 1, 10, tzinfo=UTC),
    ],
    "America/New_York": [
        datetime(2026, 3, 8, 4, 0, tzinfo=UTC),
        datetime(2026, 3, 8, 6, 45, tzinfo=UTC),
        datetime(2026, 3, 8, 7, 0, tzinfo=UTC),
        datetime(2026, 10, 31, 23, 0, tzinfo=UTC),
        datetime(2026, 11, 1, 5, 10, tzinfo=UTC),
        datetime(2026, 11, 1, 5, 45, tzinfo=UTC),
        datetime(2026, 11, 1, 6, 10, tzinfo=UTC),
    ],
}


def _croniter(expr: str, start: datetime) -> croniter:
    six = not expr.startswith("@") and len(expr.split()) == 6
    return croniter(expr, start, second_at_beginning=six)


def croniter_next(expr: str, after: datetime, tz: str) -> datetime:
    """croniter's next slot after ``after`` in ``tz`` (tz-aware iteration)."""
    value = _croniter(expr, after.astimezone(ZoneInfo(tz))).get_next(datetime)
    return value.astimezone(UTC)


def wall_clock_next(expr: str, after: datetime, tz: str) -> datetime:
    """DESIGN's rule: croniter's naive local slots, skipped when they do not exist, at their
    first occurrence when they exist twice."""
    zone = ZoneInfo(tz)
    local_after = after.astimezone(zone).replace(tzinfo=None)
    it = _croniter(expr, local_after)
    for _ in range(100_000):
        local = it.get_next(datetime)
        first = local.replace(tzinfo=zone, fold=0)
        if first.astimezone(UTC).astimezone(zone).replace(tzinfo=None) != local:
            continue  # does not exist
        instant = first.astimezone(UTC)
        if instant > after:
            return instant
    raise AssertionError("no slot found")


async def cron_next_many(
    conn: asyncpg.Connection, cases: list[tuple[str, datetime, str]]
) -> list[datetime]:
    rows = await conn.fetch(
        """
        SELECT pgq.cron_next(e, a, z) AS slot
          FROM unnest($1::text[], $2::timestamptz[], $3::text[]) WITH ORDINALITY AS c(e, a, z, n)
         ORDER BY n
        """,
        [c[0] for c in cases],
        [c[1] for c in cases],
        [c[2] for c in cases],
    )
    return [r["slot"] for r in rows]


def _mismatches(
    cases: list[tuple[str, datetime, str]], got: list[datetime], want: list[datetime]
) -> list[str]:
    return [
        f"{expr!r} after {after.isoformat()} in {tz}: pgq {g}, reference {w}"
        for (expr, after, tz), g, w in zip(cases, got, want, strict=True)
        if g != w
    ]


@pytest.mark.parametrize("tz", ["UTC", "Asia/Tokyo", "Asia/Kolkata"])
async def test_cron_next_agrees_with_croniter(conn: asyncpg.Connection, tz: str) -> None:
    assert len(EXPRESSIONS) >= 50
    cases = [(e, s, tz) for e in EXPRESSIONS for s in STARTS]
    got = await cron_next_many(conn, cases)
    want = [croniter_next(e, s, z) for e, s, z in cases]
    assert _mismatches(cases, got, want) == []


async def test_cron_next_agrees_with_croniter_in_berlin_away_from_transitions(
    conn: asyncpg.Connection,
) -> None:
    # Only starts whose next few weeks contain no transition, and slots before the next one.
    starts = [s for s in STARTS if s.month in (1, 5, 6, 7, 9)]
    cases = [(e, s, "Europe/Berlin") for e in EXPRESSIONS for s in starts]
    got = await cron_next_many(conn, cases)
    want = [croniter_next(e, s, z) for e, s, z in cases]
    away = [i for i, w in enumerate(want) if w.month not in (3, 10)]
    assert len(away) > len(cases) * 0.8
    mismatches = _mismatches(
        [cases[i] for i in away], [got[i] for i in away], [want[i] for i in away]
    )
    assert mismatches == []


@pytest.mark.parametrize("tz", sorted(DST_STARTS))
async def test_cron_next_follows_the_wall_clock_rule_across_dst(
    conn: asyncpg.Connection, tz: str
) -> None:
    # Chain five slots from each start so every transition is crossed, not only approached.
    cases: list[tuple[str, datetime, str]] = []
    want: list[datetime] = []
    for expr in EXPRESSIONS:
        for start in DST_STARTS[tz]:
            after = start
            for _ in range(5):
                slot = wall_clock_next(expr, after, tz)
                cases.append((expr, after, tz))
                want.append(slot)
                after = slot
    got = await cron_next_many(conn, cases)
    assert _mismatches(cases, got, want) == []


def _utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(
    ("expr", "after", "tz", "expected"),
    [
        # DST ends in Berlin: 02:30 exists twice (00:30 and 01:30 UTC) and fires once, first.
        ("30 2 * * *", _utc(2026, 10, 24, 12), "Europe/Berlin", _utc(2026, 10, 25, 0, 30)),
        ("30 2 * * *", _utc(2026, 10, 25, 0, 30), "Europe/Berlin", _utc(2026, 10, 26, 1, 30)),
        # DST starts in Berlin: 02:30 does not exist that day and is skipped.
        ("30 2 * * *", _utc(2026, 3, 28, 12), "Europe/Berlin", _utc(2026, 3, 30, 0, 30)),
        # hourly across the jump: 01:00 CET then 03:00 CEST, one hour apart
        ("0 * * * *", _utc(2026, 3, 29, 0, 0), "Europe/Berlin", _utc(2026, 3, 29, 1, 0)),
        # every 30 minutes across the repeated hour: once per local time
        ("*/30 * * * *", _utc(2026, 10, 25, 0, 31), "Europe/Berlin", _utc(2026, 10, 25, 2, 0)),
        # New York: 01:30 exists twice on 1 November (05:30 and 06:30 UTC)
        ("30 1 * * *", _utc(2026, 10, 31, 12), "America/New_York", _utc(2026, 11, 1, 5, 30)),
        ("30 1 * * *", _utc(2026, 11, 1, 5, 30), "America/New_York", _utc(2026, 11, 2, 6, 30)),
        # ... and 02:30 does not exist on 8 March
        ("30 2 * * *", _utc(2026, 3, 7, 12), "America/New_York", _utc(2026, 3, 9, 6, 30)),
        # strictly after: a slot equal to `after` is not returned
        ("0 0 * * *", _utc(2026, 1, 1), "UTC", _utc(2026, 1, 2)),
        # leap day, and Vixie's day rule (the 1st-5th, or any Monday)
        ("0 0 29 2 *", _utc(2026, 12, 3), "UTC", _utc(2028, 2, 29)),
        ("0 0 1-5 * mon", _utc(2026, 12, 5), "UTC", _utc(2026, 12, 7)),
    ],
)
async def test_cron_next_cases(
    conn: asyncpg.Connection, expr: str, after: datetime, tz: str, expected: datetime
) -> None:
    assert await conn.fetchval("SELECT pgq.cron_next($1, $2, $3)", expr, after, tz) == expected


async def test_cron_next_is_null_for_a_date_that_never_comes(conn: asyncpg.Connection) -> None:
    assert await conn.fetchval("SELECT pgq.cron_next('0 0 30 2 *', now())") is None


@pytest.mark.parametrize(
    ("expr", "tz", "words"),
    [
        ("61 * * * *", "UTC", "minute field: 61 is out of range 0-59"),
        ("* 24 * * *", "UTC", "hour field: 24 is out of range 0-23"),
        ("* * 0 * *", "UTC", "day-of-month field: 0 is out of range 1-31"),
        ("* * * 13 *", "UTC", "month field: 13 is out of range 1-12"),
        ("* * * * 8", "UTC", "day-of-week field: 8 is out of range 0-7"),
        ("* * * * foo", "UTC", "day-of-week field: 'foo' is not a number or a known name"),
        ("5-1 * * * *", "UTC", "range runs backwards"),
        ("*/0 * * * *", "UTC", "step must be at least 1"),
        ("*/99999999999 * * * *", "UTC", "minute field '*/99999999999' is invalid"),
        ("9999999999 * * * *", "UTC", "'9999999999' is not a number or a known name"),
        ("* * * *", "UTC", "has 4 fields"),
        ("* * * * * * *", "UTC", "has 7 fields"),
        ("@reboot", "UTC", "has 1 fields"),
        ("0 0 L * *", "UTC", "'l' is not a number or a known name"),
        ("", "UTC", "cron expression is required"),
        ("* * * * *", "Mars/Olympus", "timezone 'Mars/Olympus' is not a known time zone"),
    ],
)
async def test_cron_next_refuses_bad_input_with_pq400(
    conn: asyncpg.Connection, expr: str, tz: str, words: str
) -> None:
    with pytest.raises(asyncpg.PostgresError) as caught:
        await conn.fetchval("SELECT pgq.cron_next($1, now(), $2)", expr, tz)
    assert caught.value.sqlstate == "PQ400"
    assert words in str(caught.value)
    assert isinstance(translate(caught.value), InvalidArgument)


async def test_cron_next_is_cheap_for_dense_and_sparse_schedules(conn: asyncpg.Connection) -> None:
    # 1,000 calls each: an every-second schedule and a yearly one in a DST zone.
    for expr, tz in (("* * * * * *", "UTC"), ("0 3 29 2 *", "Europe/Berlin")):
        started = await conn.fetchval("SELECT clock_timestamp()")
        await conn.fetchval(
            """SELECT count(pgq.cron_next($1, now() + i * interval '17 minutes', $2))
                 FROM generate_series(1, 1000) AS i""",
            expr,
            tz,
        )
        elapsed = await conn.fetchval("SELECT clock_timestamp()") - started
        assert elapsed < timedelta(seconds=3), (expr, elapsed)
