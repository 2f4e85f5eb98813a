"""OpenTelemetry (pgq/tracing.py): the runner's span of an attempt is in the trace of the
enqueue, whether the job came through ``POST /jobs`` with a ``traceparent`` header or from
``Client.enqueue`` under an active span; an in-memory exporter (opentelemetry-sdk) sees
the spans. Runners run in this loop against a real database and coordinator."""

from __future__ import annotations

import subprocess
import sys
import threading
from datetime import UTC, datetime

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import pgq
from pgq import tracing
from pgq.runner import HttpSource, Runner

from .support import REPO, job_row, live_app, running, running_http, wait_until

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


@pytest.fixture
def spans(monkeypatch):
    """The spans pgq (and the tests' own tracer) end, in order."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(tracing, "_tracer", provider.get_tracer("pgq"))
    exporter.tracer = provider.get_tracer("tests")  # type: ignore[attr-defined]
    yield exporter
    provider.shutdown()


def traced_runner(dsn: str, spans) -> Runner:
    runner = Runner(dsn, worker_id="trace-test")

    @runner.handler("TRACED")
    async def traced(job: pgq.Job):
        with spans.tracer.start_as_current_span("inside"):
            if job.args.get("fail"):
                raise pgq.PermanentError("asked to fail")
        return None

    @runner.handler("TRACED_SYNC")
    def traced_sync(job: pgq.Job):
        with spans.tracer.start_as_current_span("inside sync"):
            return threading.current_thread().name

    return runner


def process_spans(spans, job_id: int):
    return [
        s
        for s in spans.get_finished_spans()
        if s.attributes.get("messaging.message.id") == str(job_id)
    ]


async def test_the_runners_span_is_in_the_trace_of_the_traceparent_sent_to_post_jobs(
    dsn, client, spans
):
    runner = traced_runner(dsn, spans)
    async with live_app(dsn) as live, running(runner):
        status, body, _ = await live.request(
            "POST",
            "/jobs",
            json={"type": "TRACED", "queue": "default"},
            headers={"traceparent": TRACEPARENT, "tracestate": "vendor=x"},
        )
        assert status == 201, body
        status, batch, _ = await live.request(
            "POST",
            "/jobs/batch",
            json={"jobs": [{"type": "TRACED"}, {"type": "TRACED_SYNC"}]},
            headers={"traceparent": TRACEPARENT},
        )
        assert status == 201, batch
        ids = [body["id"]] + [j["id"] for j in batch["jobs"]]
        for job_id in ids:
            assert (await client.wait(job_id, timeout=10)).status == "succeeded"
        await wait_until(lambda: all(process_spans(spans, i) for i in ids))
    assert "trace_context" not in body  # not part of the job's JSON
    row = await job_row(client.pool, ids[0])
    assert row["trace_context"] == {"traceparent": TRACEPARENT, "tracestate": "vendor=x"}
    for job_id, job_type in zip(ids, ["TRACED", "TRACED", "TRACED_SYNC"], strict=True):
        [span] = process_spans(spans, job_id)
        assert span.name == f"process {job_type}"
        assert span.kind is trace.SpanKind.CONSUMER
        assert format(span.context.trace_id, "032x") == TRACE_ID
        assert format(span.parent.span_id, "016x") == PARENT_ID
        assert span.parent.is_remote
        assert dict(span.attributes) == {
            "messaging.system": "pgq",
            "messaging.operation": "process",
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "messaging.destination.name": "default",
            "messaging.message.id": str(job_id),
            "messaging.client.id": "trace-test",
            "pgq.job.type": job_type,
            "pgq.job.attempt": 1,
            "pgq.outcome": "success",
        }
        assert span.status.status_code is trace.StatusCode.UNSET
    # the handlers' own spans are children of the attempt's span, on the loop and on a thread
    by_name = {s.name: s for s in spans.get_finished_spans()}
    assert by_name["inside sync"].parent.span_id == process_spans(spans, ids[2])[0].context.span_id
    inside = [s for s in spans.get_finished_spans() if s.name == "inside"]
    assert {s.parent.span_id for s in inside} == {
        process_spans(spans, i)[0].context.span_id for i in ids[:2]
    }


async def test_an_http_runners_span_is_in_the_trace_of_the_traceparent_sent_to_post_jobs(
    dsn, client, spans
):
    """The claim answer carries the job's trace context, so a runner working through the
    coordinator continues the enqueue's trace like a database runner does."""
    runner = traced_runner(dsn, spans)
    async with live_app(dsn) as live, running_http(runner, HttpSource(live.url)):
        status, body, _ = await live.request(
            "POST",
            "/jobs",
            json={"type": "TRACED"},
            headers={"traceparent": TRACEPARENT},
        )
        assert status == 201, body
        assert (await client.wait(body["id"], timeout=10)).status == "succeeded"
        await wait_until(lambda: process_spans(spans, body["id"]))
    [span] = process_spans(spans, body["id"])
    assert span.kind is trace.SpanKind.CONSUMER
    assert format(span.context.trace_id, "032x") == TRACE_ID
    assert format(span.parent.span_id, "016x") == PARENT_ID


async def test_the_runners_span_is_in_the_trace_of_the_clients_active_span(dsn, client, spans):
    runner = traced_runner(dsn, spans)
    async with running(runner):
        with spans.tracer.start_as_current_span("request") as parent:
            one = await client.enqueue("TRACED")
            many = await client.enqueue_many([{"type": "TRACED"}, {"type": "TRACED"}])
        untraced = await client.enqueue("TRACED")
        failing = await client.enqueue("TRACED", {"fail": True})
        ids = [one.id, *(j.id for j in many), untraced.id, failing.id]
        for job_id in ids:
            await client.wait(job_id, timeout=10)
        await wait_until(lambda: all(process_spans(spans, i) for i in ids))
    for job_id in ids[:3]:
        [span] = process_spans(spans, job_id)
        assert span.context.trace_id == parent.get_span_context().trace_id
        assert span.parent.span_id == parent.get_span_context().span_id
    # no context on the job: the attempt starts a trace of its own
    [root] = process_spans(spans, untraced.id)
    assert root.parent is None
    assert root.context.trace_id != parent.get_span_context().trace_id
    assert (await job_row(client.pool, untraced.id))["trace_context"] is None
    # a failed attempt records its exception and an error status
    [failed] = process_spans(spans, failing.id)
    assert failed.status.status_code is trace.StatusCode.ERROR
    assert failed.status.description == "asked to fail"
    assert failed.attributes["pgq.outcome"] == "permanent"
    [event] = failed.events
    assert event.name == "exception"
    assert event.attributes["exception.type"].endswith("PermanentError")


async def test_without_opentelemetry_jobs_carry_no_context_and_run_without_spans(
    dsn, client, spans, monkeypatch
):
    monkeypatch.setattr(tracing, "ENABLED", False)
    runner = traced_runner(dsn, spans)
    async with running(runner):
        with spans.tracer.start_as_current_span("request"):
            job = await client.enqueue("TRACED")
        assert (await client.wait(job.id, timeout=10)).status == "succeeded"
    assert (await job_row(client.pool, job.id))["trace_context"] is None
    assert process_spans(spans, job.id) == []


def _job(trace_context: dict[str, str] | None) -> pgq.Job:
    return pgq.Job(
        id=1, type="T", queue="default", status="running", args={}, priority=0,
        run_at=datetime.now(UTC), attempt=1, max_attempts=3, timeout_seconds=60,
        trace_context=trace_context,
    )  # fmt: skip


def test_without_an_sdk_only_a_job_with_a_trace_context_gets_a_span(monkeypatch) -> None:
    # No SDK: pgq's tracer is the API's proxy and no tracer provider was set.
    monkeypatch.setattr(tracing, "_tracer", trace.ProxyTracer("pgq"))
    monkeypatch.setattr(trace, "get_tracer_provider", trace.ProxyTracerProvider)
    assert tracing.attempt(_job(None), "w") is None  # nothing to record or carry on
    attempt = tracing.attempt(_job({"traceparent": TRACEPARENT}), "w")
    assert attempt is not None
    try:  # the handler's outgoing calls carry the enqueue's trace on
        assert tracing.current() == {"traceparent": TRACEPARENT}
    finally:
        attempt.end()
    assert tracing.current() is None


def test_with_an_sdk_a_job_without_a_trace_context_starts_a_trace(spans) -> None:
    attempt = tracing.attempt(_job(None), "w")
    assert attempt is not None
    attempt.end()
    [span] = spans.get_finished_spans()
    assert span.name == "process T" and span.parent is None


def test_without_the_package_tracing_is_off_at_import() -> None:
    code = (
        "import sys; sys.modules['opentelemetry'] = None\n"
        "import pgq, pgq.tracing as t\n"
        "assert t.ENABLED is False and t.current() is None\n"
        "assert t.from_headers({'traceparent': '" + TRACEPARENT + "'})\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=60)


@pytest.mark.parametrize(
    ("header", "kept"),
    [
        (TRACEPARENT, True),
        (f" {TRACEPARENT} ", True),
        (f"01-{TRACE_ID}-{PARENT_ID}-01-later-fields", True),  # a future version
        (f"00-{TRACE_ID}-{PARENT_ID}-01-extra", False),  # version 00 has four fields
        (f"ff-{TRACE_ID}-{PARENT_ID}-01", False),
        (f"00-{'0' * 32}-{PARENT_ID}-01", False),
        (f"00-{TRACE_ID}-{'0' * 16}-01", False),
        (TRACEPARENT.upper(), False),
        ("garbage", False),
    ],
)
def test_from_headers_keeps_only_a_valid_traceparent(header: str, kept: bool) -> None:
    context = tracing.from_headers({"traceparent": header, "tracestate": "a=1"})
    assert (context == {"traceparent": header.strip(), "tracestate": "a=1"}) is kept
    assert (context is None) is not kept


@pytest.mark.parametrize("tracestate", ["a=" + "x" * 600, "a=\x01", "a=é"])
def test_a_long_or_odd_tracestate_is_dropped(tracestate: str) -> None:
    assert tracing.from_headers({"traceparent": TRACEPARENT, "tracestate": tracestate}) == {
        "traceparent": TRACEPARENT
    }


async def test_enqueue_refuses_a_trace_context_that_is_not_an_object(conn) -> None:
    with pytest.raises(Exception, match="trace_context must be a JSON object"):
        await conn.fetchrow("SELECT pgq.enqueue('T', trace_context => '[1]')")
    with pytest.raises(Exception, match=r"jobs\[1\]: trace_context must be at most 4096 bytes"):
        await conn.fetch(
            "SELECT pgq.enqueue_bulk($1)",
            [{"type": "T"}, {"type": "T", "trace_context": {"x": "y" * 5000}}],
        )
