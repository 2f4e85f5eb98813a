"""``/schedules`` over HTTP, and the coordinator's schedule timer firing on time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import asyncpg
import pytest

from .support import Live, live_app
from .test_http_api import conforms, is_error


@pytest.fixture
async def live(dsn: str) -> AsyncIterator[Live]:
    async with live_app(dsn) as app:
        yield app


NIGHTLY = {"cron": "0 3 * * *", "type": "TMDB_SYNC", "arguments": {"movieId": 1}}


async def test_put_get_list_delete(live: Live) -> None:
    status, body, resp = await live.request(
        "PUT", "/schedules/tmdb.nightly", json={**NIGHTLY, "timezone": "Europe/Berlin"}
    )
    assert status == 201, body
    assert resp.headers["Location"] == "/schedules/tmdb.nightly"
    conforms(body, "Schedule")
    assert (body["name"], body["type"], body["arguments"], body["timezone"]) == (
        "tmdb.nightly",
        "TMDB_SYNC",
        {"movieId": 1},
        "Europe/Berlin",
    )
    assert (body["catch_up"], body["paused"], body["last_run_at"]) == ("latest", False, None)

    status, replaced, _ = await live.request(
        "PUT", "/schedules/tmdb.nightly", json={**NIGHTLY, "priority": 3, "paused": True}
    )
    assert status == 200, replaced
    assert (replaced["priority"], replaced["paused"], replaced["timezone"]) == (3, True, "UTC")
    assert replaced["created_at"] == body["created_at"]

    status, listed, _ = await live.request("GET", "/schedules")
    assert status == 200
    assert [s["name"] for s in listed["schedules"]] == ["tmdb.nightly"]
    conforms(listed["schedules"][0], "Schedule")

    status, one, _ = await live.request("GET", "/schedules/tmdb.nightly")
    assert (status, one["priority"]) == (200, 3)

    status, deleted, _ = await live.request("DELETE", "/schedules/tmdb.nightly")
    assert (status, deleted["name"]) == (200, "tmdb.nightly")
    for method in ("GET", "DELETE"):
        status, body, _ = await live.request(method, "/schedules/tmdb.nightly")
        assert status == 404 and is_error(body, "schedule_not_found"), body


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"type": "T"}, "cron: is required"),
        ({"cron": "* * * * *"}, "type: is required"),
        ({**NIGHTLY, "extra": 1}, "extra: unknown field"),
        ({**NIGHTLY, "queue": None}, "queue: must not be null"),
        ({**NIGHTLY, "cron": 5}, "cron: must be a string"),
        ({**NIGHTLY, "cron": "61 * * * *"}, "cron: cron minute field: 61 is out of range"),
        ({**NIGHTLY, "cron": "0 0 30 2 *"}, "cron: cron expression '0 0 30 2 *' never fires"),
        ({**NIGHTLY, "cron": "@reboot"}, "cron: cron expression '@reboot' has 1 fields"),
        ({**NIGHTLY, "timezone": "Mars/Base"}, "timezone: timezone 'Mars/Base' is not a known"),
        ({**NIGHTLY, "catch_up": "some"}, "catch_up: must be one of all, latest, none"),
        ({**NIGHTLY, "priority": 40000}, "priority: must be an integer between"),
        ({**NIGHTLY, "max_attempts": 0}, "max_attempts: must be an integer between 1 and 1000"),
        ({**NIGHTLY, "timeout_seconds": True}, "timeout_seconds: must be an integer"),
        ({**NIGHTLY, "paused": "yes"}, "paused: must be true or false"),
        ({**NIGHTLY, "arguments": [1]}, "arguments: must be a JSON object"),
        ({**NIGHTLY, "type": "bad type"}, "type: 'bad type' is invalid"),
        ({**NIGHTLY, "queue": "Bad"}, "queue: 'Bad' is invalid"),
    ],
)
async def test_put_refuses_bad_fields_naming_them(live: Live, body: Any, field: str) -> None:
    status, answer, _ = await live.request("PUT", "/schedules/ok", json=body)
    assert status == 400, answer
    assert answer["error"]["message"].startswith(field), answer


async def test_bad_names_and_queries_are_400(live: Live) -> None:
    status, body, _ = await live.request("PUT", "/schedules/Bad", json=NIGHTLY)
    assert status == 400 and body["error"]["message"].startswith("name: 'Bad' is invalid")
    status, body, _ = await live.request("GET", "/schedules?x=1")
    assert status == 400, body
    status, body, _ = await live.request("PUT", "/schedules/ok")
    assert status == 400 and is_error(body, "invalid_json"), body


async def test_tokens_guard_schedules(dsn: str) -> None:
    async with live_app(dsn, api_tokens=("s3cret-token-0123456789",)) as live:
        status, body, _ = await live.request("GET", "/schedules")
        assert status == 401, body
        status, body, _ = await live.request(
            "GET", "/schedules", headers={"Authorization": "Bearer s3cret-token-0123456789"}
        )
        assert status == 200, body


async def test_the_coordinator_fires_a_schedule_created_just_before_its_slot(
    live: Live, conn: asyncpg.Connection
) -> None:
    # The coordinator learns of the new schedule by notification and fires each second's
    # slot within a second, without polling.
    status, body, _ = await live.request(
        "PUT", "/schedules/every.second", json={"cron": "* * * * * *", "type": "TICK"}
    )
    assert status == 201, body
    rows: list[asyncpg.Record] = []
    for _ in range(100):
        rows = await conn.fetch(
            "SELECT scheduled_for, run_at, created_at FROM pgq.jobs "
            "WHERE schedule = 'every.second' ORDER BY scheduled_for"
        )
        if len(rows) >= 3:
            break
        await asyncio.sleep(0.05)
    assert len(rows) >= 3
    for r in rows:
        assert r["run_at"] == r["scheduled_for"]
        assert timedelta(0) <= r["created_at"] - r["scheduled_for"] < timedelta(seconds=1)
    slots = [r["scheduled_for"] for r in rows]
    assert len(slots) == len(set(slots))
