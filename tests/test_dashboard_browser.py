"""The dashboard at /ui in a real browser: Debian's Chromium driven by Playwright.

Skipped only when no Chromium can be found (say so loudly: CI installs one, see .ci/run).
Every test fails on a console error or an uncaught exception in the page. The same tests
write the README's screenshots (docs/screenshots/, desktop and phone widths).
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

import pgq
from pgq import queries

from .support import REPO, live_app, running, wait_until

playwright_api = pytest.importorskip("playwright.async_api", reason="playwright not installed")

SHOTS = REPO / "docs" / "screenshots"
DESKTOP = {"width": 1280, "height": 820}
PHONE = {"width": 390, "height": 844}
ME = "browser-test-worker"


def _chromium() -> str | None:
    for candidate in ("/usr/bin/chromium",):
        if candidate and Path(candidate).exists():
            return candidate
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Any]:
    path = _chromium()
    if path is None:
        message = (
            "NO BROWSER: the dashboard browser tests are SKIPPED because no Chromium was "
            "found (apt-get install -y chromium chromium-driver)"
        )
        print(f"\n{'!' * 20} {message} {'!' * 20}", file=sys.stderr)
        pytest.skip(message)
    async with playwright_api.async_playwright() as p:
        b = await p.chromium.launch(
            executable_path=path, headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            yield b
        finally:
            await b.close()


class Page:
    """A browser page that records console errors and page exceptions."""

    def __init__(self, page: Any, base: str) -> None:
        self.page = page
        self.base = base
        self.errors: list[str] = []
        page.on(
            "console",
            lambda m: (
                self.errors.append(f"console.{m.type}: {m.text}") if m.type == "error" else None
            ),
        )
        page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        page.on("dialog", lambda d: asyncio.ensure_future(d.accept()))

    def _console(self, message: Any) -> None:
        if message.type == "error":
            self.errors.append(f"console.error: {message.text}")

    async def goto(self, hash_: str = "#/") -> None:
        await self.page.goto(f"{self.base}/ui/{hash_}")

    async def shot(self, name: str) -> None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        await self.page.wait_for_timeout(150)  # let the last re-render settle
        await self.page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=False)


@pytest.fixture
async def live(dsn: str) -> AsyncIterator[Any]:
    async with live_app(dsn) as app:
        yield app


@pytest.fixture
async def ui(browser: Any, live: Any) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport=DESKTOP)
    page = Page(await context.new_page(), live.url)
    try:
        yield page
        assert page.errors == [], page.errors
    finally:
        await context.close()


async def dead_job(
    conn: asyncpg.Connection, job_type: str, message: str, queue: str = "default"
) -> int:
    # priority -1: claimed before the other jobs of its type, on both attempts
    job, _ = await queries.enqueue(
        conn, job_type, {"movieId": 42}, queue=queue, max_attempts=2, priority=-1
    )
    for attempt in (1, 2):
        [c] = await queries.claim(conn, ME, 1, queues=[queue], job_types=[job_type])
        await queries.fail(
            conn, c.id, ME, {"message": f"{message} (attempt {attempt})"}, retry_delay=0
        )
    return job.id


async def some_jobs(conn: asyncpg.Connection) -> dict[str, int]:
    for i in range(6):
        await queries.enqueue(conn, "TMDB_SYNC", {"movieId": i})
    for i in range(3):
        await queries.enqueue(conn, "BATCH_QUOTE_PROCESS", {"batchId": i}, queue="quotes")
    [c] = await queries.claim(conn, ME, 1, queues=["default"])
    await queries.complete(conn, c.id, ME, {"title": "Heat"})
    [r] = await queries.claim(conn, ME, 1, queues=["quotes"])
    await queries.progress(conn, r.id, ME, {"done": 30, "total": 50, "message": "pricing"})
    dead = await dead_job(conn, "TMDB_SYNC", "TMDB answered 503 Service Unavailable")
    return {"dead": dead, "running": r.id}


async def shown_counts(page: Any) -> dict[tuple[str, str], int]:
    cells = await page.eval_on_selector_all(
        "tr[data-queue] td[data-status]",
        "els => els.map(td => [td.closest('tr').dataset.queue, td.dataset.status,"
        " td.textContent.replace(/[^0-9]/g, '')])",
    )
    return {(q, s): int(n) for q, s, n in cells}


# -- overview ---------------------------------------------------------------------------


async def test_overview_matches_pgq_stats(ui: Page, conn: asyncpg.Connection) -> None:
    await some_jobs(conn)
    await ui.goto("#/")
    await ui.page.wait_for_selector("tr[data-queue='quotes']")
    shown = await shown_counts(ui.page)
    stats = await queries.stats(conn)
    expected: dict[tuple[str, str], int] = {}
    for row in stats:
        expected[(row["queue"], row["status"])] = row["count"]
        expected[("*", row["status"])] = expected.get(("*", row["status"]), 0) + row["count"]
    assert {k: v for k, v in shown.items() if v} == expected
    await ui.shot("overview-desktop")
    await ui.page.set_viewport_size(PHONE)
    await ui.shot("overview-phone")


async def test_overview_updates_live_when_a_job_is_enqueued_and_claimed(
    ui: Page, conn: asyncpg.Connection
) -> None:
    await some_jobs(conn)
    await ui.goto("#/")
    await ui.page.wait_for_selector("#live.on")
    cell = "tr[data-queue='default'] td[data-status='running']"
    assert (await ui.page.text_content(cell)).strip() == "0"
    await queries.claim(conn, ME, 2, queues=["default"])
    # (wait_for_function would evaluate a string, which the page's CSP forbids)
    await wait_until(lambda: _text_is(ui.page, cell, "2"), timeout=2, interval=0.05)


async def _text_is(page: Any, selector: str, text: str) -> bool:
    return (await page.text_content(selector) or "").strip() == text


# -- live failure, and reading why ----------------------------------------------------------


async def test_a_job_failed_from_psql_shows_as_dead_within_a_second(
    ui: Page, conn: asyncpg.Connection
) -> None:
    job, _ = await queries.enqueue(conn, "TMDB_SYNC", {"movieId": 7}, max_attempts=1)
    await ui.goto("#/jobs?type=TMDB_SYNC")
    await ui.page.wait_for_selector(f"tr[data-job='{job.id}'][data-status='queued']")
    await ui.page.wait_for_selector("#live.on")
    await conn.execute("SELECT pgq.claim('psql', 1)")
    started = time.monotonic()
    await conn.execute(
        "SELECT pgq.fail($1, 'psql', '{\"message\": \"movie 7 not found\"}', false)", job.id
    )
    await ui.page.wait_for_selector(f"tr[data-job='{job.id}'][data-status='dead']", timeout=1000)
    assert time.monotonic() - started < 1.0
    assert "movie 7 not found" in await ui.page.text_content(f"tr[data-job='{job.id}']")
    await ui.shot("jobs-desktop")


async def test_job_view_shows_every_attempts_error_and_retry_replays_it(
    ui: Page, conn: asyncpg.Connection
) -> None:
    ids = await some_jobs(conn)
    await ui.goto(f"#/jobs/{ids['dead']}")
    await ui.page.wait_for_selector("text=Errors (2)")
    body = await ui.page.text_content("main")
    assert "TMDB answered 503 Service Unavailable (attempt 1)" in body
    assert "TMDB answered 503 Service Unavailable (attempt 2)" in body
    assert '"movieId": 42' in body
    await ui.shot("job-dead-desktop")
    await ui.page.set_viewport_size(PHONE)
    await ui.shot("job-dead-phone")
    await ui.page.get_by_role("button", name="Retry").click()
    await wait_until(
        lambda: conn.fetchval("SELECT status = 'queued' FROM pgq.jobs WHERE id = $1", ids["dead"]),
        timeout=5,
    )
    await ui.page.wait_for_selector("h2 .pill.queued")  # the page followed, no reload


async def test_a_dead_job_is_fixed_and_run_again_from_its_page(
    ui: Page, conn: asyncpg.Connection
) -> None:
    # The person reads why the job died (its arguments were wrong), edits them and runs a
    # copy, without leaving the page; the dead job stays as it was.
    job, _ = await queries.enqueue(conn, "TMDB_SYNC", {"movieId": "abc"}, priority=-1)
    [c] = await queries.claim(conn, ME, 1)
    await queries.fail(
        conn,
        c.id,
        ME,
        {"message": "movieId must be a positive integer, got 'abc'", "traceback": "line 1\nline 2"},
        retryable=False,
    )
    await ui.goto(f"#/jobs/{job.id}")
    await ui.page.wait_for_selector("text=movieId must be a positive integer")
    await ui.page.get_by_text("Traceback").click()
    assert await ui.page.text_content("details pre") == "line 1\nline 2"  # real line breaks
    await ui.page.get_by_text("Edit the arguments and run a copy").click()
    await ui.page.get_by_label("Arguments of a new TMDB_SYNC job").fill('{"movieId": 77}')
    await ui.page.get_by_role("button", name="Enqueue the copy").click()
    new_view = await ui.page.wait_for_selector(f"[data-view=job]:not([data-job='{job.id}'])")
    new_id = int(await new_view.get_attribute("data-job"))
    copy = await queries.get_job(conn, new_id)
    assert copy is not None
    assert (copy.type, copy.args, copy.status) == ("TMDB_SYNC", {"movieId": 77}, "queued")
    assert (await queries.get_job(conn, job.id)).status == "dead"
    await ui.page.wait_for_selector(f"[data-view=job][data-job='{new_id}'] h2 .pill.queued")


async def test_a_live_reload_keeps_what_the_reader_opened_and_typed(
    ui: Page, conn: asyncpg.Connection
) -> None:
    # The job page rebuilds itself on every event about its job; an open traceback and
    # half-edited arguments must survive that.
    job, _ = await queries.enqueue(conn, "TMDB_SYNC", {"movieId": "abc"}, max_attempts=2)
    [c] = await queries.claim(conn, ME, 1)
    await queries.fail(conn, c.id, ME, {"message": "first failure", "traceback": "tb one"})
    await ui.goto(f"#/jobs/{job.id}")
    await ui.page.wait_for_selector("text=first failure")
    await ui.page.get_by_text("Traceback").click()

    # attempt 2 fails for good: the event reloads the page, which now lists two errors
    await conn.execute("UPDATE pgq.jobs SET run_at = now() WHERE id = $1", job.id)
    [c] = await queries.claim(conn, ME, 1)
    await queries.fail(
        conn, c.id, ME, {"message": "second failure", "traceback": "tb two"}, retryable=False
    )
    await ui.page.wait_for_selector("text=Errors (2)")
    opened = await ui.page.eval_on_selector_all(
        "details[data-keep]", "ds => ds.map(d => [d.querySelector('pre').textContent, d.open])"
    )
    assert sorted(opened) == [["tb one", True], ["tb two", False]]

    await ui.page.get_by_text("Edit the arguments and run a copy").click()
    await ui.page.get_by_label("Arguments of a new TMDB_SYNC job").fill('{"movieId": 7')
    heading = await ui.page.query_selector("[data-view=job] h2")
    assert heading is not None
    await conn.execute(  # one more event about this job: the page reloads once more
        "SELECT pg_notify('pgq_events', json_build_object('id', $1::bigint, 'status', 'dead',"
        " 'queue', 'default', 'type', 'TMDB_SYNC')::text)",
        job.id,
    )
    await heading.wait_for_element_state("hidden")  # replaced by the reload
    area = ui.page.get_by_label("Arguments of a new TMDB_SYNC job")
    assert await area.input_value() == '{"movieId": 7'
    assert await area.is_visible()


async def test_cancel_from_the_job_view(ui: Page, conn: asyncpg.Connection) -> None:
    job, _ = await queries.enqueue(conn, "TMDB_SYNC", {"movieId": 9})
    await ui.goto(f"#/jobs/{job.id}")
    await ui.page.get_by_role("button", name="Cancel").click()
    await wait_until(
        lambda: conn.fetchval("SELECT status = 'cancelled' FROM pgq.jobs WHERE id = $1", job.id),
        timeout=5,
    )
    await ui.page.wait_for_selector("h2 .pill.cancelled")


async def test_dead_letters_bulk_replay(ui: Page, conn: asyncpg.Connection) -> None:
    dead = [await dead_job(conn, "TMDB_SYNC", f"boom {i}") for i in range(3)]
    await ui.goto("#/dead")
    await ui.page.wait_for_selector(f"tr[data-job='{dead[2]}']")
    await ui.shot("dead-desktop")
    await ui.page.set_viewport_size(PHONE)
    await ui.shot("dead-phone")
    await ui.page.get_by_role("button", name="Replay all dead jobs").click()
    await wait_until(
        lambda: conn.fetchval(
            "SELECT count(*) = 3 FROM pgq.jobs WHERE status = 'queued' AND id = ANY($1)", dead
        ),
        timeout=5,
    )


async def test_queue_pause_resume_and_limits_from_the_overview(
    ui: Page, conn: asyncpg.Connection
) -> None:
    await queries.enqueue(conn, "TMDB_SYNC", {"movieId": 1})
    await ui.goto("#/")
    await ui.page.get_by_role("button", name="pause queue default").click()
    await wait_until(
        lambda: conn.fetchval("SELECT paused FROM pgq.queues WHERE queue = 'default'"), timeout=5
    )
    await ui.page.get_by_role("button", name="resume queue default").click()
    await wait_until(
        lambda: conn.fetchval("SELECT NOT paused FROM pgq.queues WHERE queue = 'default'"),
        timeout=5,
    )
    # The resume's own reload of the overview may land after this click: the open form
    # must survive it, as it survives the reload an event brings while it is being typed in.
    await ui.page.get_by_text("Limits").click()
    concurrency = ui.page.get_by_label("Concurrency")
    await concurrency.fill("3")
    await ui.page.wait_for_selector("#live.on")
    await queries.claim(conn, ME, 1, queues=["default"])
    await ui.page.wait_for_selector("a[aria-label='1 running jobs in default']")  # reloaded
    assert await concurrency.is_visible()
    assert await concurrency.input_value() == "3"
    await ui.page.get_by_label("Rate /s").fill("2.5")
    await ui.page.get_by_role("button", name="Save").click()
    await wait_until(
        lambda: conn.fetchval(
            "SELECT concurrency = 3 AND rate = 2.5 AND key_concurrency IS NULL"
            " FROM pgq.queues WHERE queue = 'default'"
        ),
        timeout=5,
    )
    await ui.page.wait_for_selector("tr[data-queue='default'] >> text=at most 3, rate 2.5/s")
    assert not await concurrency.is_visible()  # saved: the form closed


# -- progress --------------------------------------------------------------------------------


async def test_a_progress_bar_moves_while_a_handler_reports(
    ui: Page, dsn: str, conn: asyncpg.Connection
) -> None:
    runner = pgq.Runner(dsn, concurrency=1)
    step = asyncio.Queue[int]()
    go = asyncio.Event()

    @runner.handler("BATCH_QUOTE_PROCESS")
    async def handler(job: pgq.Job) -> dict[str, int]:
        for done in (10, 60, 100):
            await job.report_progress({"done": done, "total": 100})
            await step.put(done)
            await go.wait()
            go.clear()
        return {"processed": 100}

    job, _ = await queries.enqueue(conn, "BATCH_QUOTE_PROCESS", {"batchId": 1})
    await ui.goto(f"#/jobs/{job.id}")
    await ui.page.wait_for_selector("#live.on")
    async with running(runner):
        bar = "[role=progressbar]"
        for done in (10, 60):
            assert await asyncio.wait_for(step.get(), 10) == done
            await ui.page.wait_for_selector(f"{bar}[aria-valuenow='{done}']", timeout=2000)
            if done == 60:
                await ui.shot("job-progress-desktop")
            go.set()
        assert await asyncio.wait_for(step.get(), 10) == 100
        go.set()
        await ui.page.wait_for_selector("h2 .pill.succeeded", timeout=5000)


# -- scale -----------------------------------------------------------------------------------


async def test_the_filtered_jobs_view_renders_fast_at_200k_jobs(
    ui: Page, conn: asyncpg.Connection
) -> None:
    await conn.execute(
        """
        INSERT INTO pgq.jobs (queue, type, status, finished_at, last_error)
        SELECT 'q' || n % 4, 'T' || n % 50, (ARRAY['queued', 'succeeded', 'dead'])[1 + n % 3],
               CASE WHEN n % 3 > 0 THEN now() END,
               CASE WHEN n % 3 = 2 THEN '{"message": "bulk failure"}'::jsonb END
          FROM generate_series(1, 200000) AS n
        """
    )
    await conn.execute("ANALYZE pgq.jobs")
    # the page is loaded once (as a person keeps it open); each filtered view is then a
    # navigation inside it: its request to GET /jobs and the render
    await ui.goto("#/schedules")
    await ui.page.wait_for_selector("[data-view=schedules] h2")
    for hash_ in (
        "#/jobs?status=dead&queue=q1",
        "#/jobs?status=queued&queue=q2",
        "#/jobs?status=succeeded&queue=q3",
        "#/jobs?status=succeeded&type=T7",
        "#/jobs?type=T7",
        "#/dead",
    ):
        started = time.monotonic()
        await ui.goto(hash_)
        await ui.page.wait_for_selector("tr[data-job]", timeout=2000)
        assert time.monotonic() - started < 2.0, hash_
        await ui.goto("#/schedules")
        await ui.page.wait_for_selector("[data-view=schedules] h2")
    await ui.goto("#/")
    await ui.page.wait_for_selector("tr[data-queue='q3']", timeout=5000)


# -- every page, tokens ------------------------------------------------------------------------


async def test_every_page_without_console_errors(ui: Page, conn: asyncpg.Connection) -> None:
    ids = await some_jobs(conn)
    for hash_ in (
        "#/",
        "#/jobs",
        "#/jobs?status=running",
        f"#/jobs/{ids['running']}",
        f"#/jobs/{ids['dead']}",
        "#/jobs/999999",
        "#/dead",
        "#/schedules",
        "#/nowhere",
    ):
        await ui.goto(hash_)
        await ui.page.wait_for_selector("main > *")
        await ui.page.wait_for_timeout(300)
    # keyboard: the skip link and the navigation are reachable with Tab
    await ui.page.keyboard.press("Tab")
    assert await ui.page.evaluate("document.activeElement.textContent") == "Skip to content"
    await ui.goto(f"#/jobs/{ids['running']}")
    await ui.page.wait_for_selector("[role=progressbar][aria-valuenow='60']")
    await ui.page.set_viewport_size(PHONE)
    await ui.shot("job-progress-phone")
    assert ui.errors == [], ui.errors


async def test_with_tokens_the_page_asks_for_one_and_keeps_it_for_the_tab(
    browser: Any, dsn: str, conn: asyncpg.Connection
) -> None:
    await some_jobs(conn)
    async with live_app(dsn, api_tokens=("dashboard-secret-token",)) as app:
        context = await browser.new_context(viewport=DESKTOP)
        try:
            ui = Page(await context.new_page(), app.url)
            await ui.goto("#/")
            await ui.page.wait_for_selector("#token-dialog[open]")
            await ui.page.fill("#token-input", "wrong")
            await ui.page.click("#token-form button")
            await ui.page.wait_for_selector("#token-error:not([hidden])")
            await ui.page.fill("#token-input", "dashboard-secret-token")
            await ui.page.click("#token-form button")
            await ui.page.wait_for_selector("tr[data-queue='quotes']")
            await ui.page.wait_for_selector("#live.on")  # /events with the token too
            await ui.page.reload()
            await ui.page.wait_for_selector("tr[data-queue='quotes']")  # sessionStorage
            # the 401s of the wrong token are expected console noise of the browser
            assert [e for e in ui.errors if "401" not in e] == []
        finally:
            await context.close()


READER = "reader:dashboard-reader-token-0123"
ADMIN = "admin:dashboard-admin-token-01234"


async def test_a_reader_token_sees_but_cannot_act(
    browser: Any, dsn: str, conn: asyncpg.Connection
) -> None:
    ids = await some_jobs(conn)
    async with live_app(dsn, api_tokens=(READER, ADMIN)) as app:
        context = await browser.new_context(viewport=DESKTOP)
        try:
            ui = Page(await context.new_page(), app.url)
            await ui.goto("#/")
            await ui.page.wait_for_selector("#token-dialog[open]")
            await ui.page.fill("#token-input", READER.split(":", 1)[1])
            await ui.page.click("#token-form button")
            # it sees: the overview, the dead job and its errors, the dead letters
            await ui.page.wait_for_selector("tr[data-queue='quotes']")
            assert await ui.page.get_by_role("button", name="pause queue default").count() == 0
            assert await ui.page.get_by_text("Limits").count() == 0
            await ui.goto(f"#/jobs/{ids['dead']}")
            await ui.page.wait_for_selector("text=Errors (2)")
            for action in ("Retry", "Cancel"):
                assert await ui.page.get_by_role("button", name=action).count() == 0, action
            assert await ui.page.get_by_text("Edit the arguments").count() == 0
            await ui.goto("#/dead")
            await ui.page.wait_for_selector(f"tr[data-job='{ids['dead']}']")
            assert await ui.page.get_by_role("button").filter(has_text="Retry").count() == 0
            assert await ui.page.get_by_text("Replay all dead jobs").count() == 0
            # and the API refuses the actions it does not show
            auth = {"Authorization": f"Bearer {READER.split(':', 1)[1]}"}
            status, body, _ = await app.request("POST", f"/jobs/{ids['dead']}/retry", headers=auth)
            assert status == 403, body
            assert (
                await conn.fetchval("SELECT status FROM pgq.jobs WHERE id = $1", ids["dead"])
                == "dead"
            )
            # the 401 before the token was given is expected console noise of the browser
            assert [e for e in ui.errors if "401" not in e] == []
        finally:
            await context.close()
    # the same page with an admin token shows the actions
    async with live_app(dsn, api_tokens=(READER, ADMIN)) as app:
        context = await browser.new_context(viewport=DESKTOP)
        try:
            ui = Page(await context.new_page(), app.url)
            await ui.goto(f"#/jobs/{ids['dead']}")
            await ui.page.wait_for_selector("#token-dialog[open]")
            await ui.page.fill("#token-input", ADMIN.split(":", 1)[1])
            await ui.page.click("#token-form button")
            await ui.page.get_by_role("button", name="Retry").wait_for()
        finally:
            await context.close()
