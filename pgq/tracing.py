"""OpenTelemetry: a job's trace goes on through the queue.

When ``opentelemetry-api`` is importable (the ``[otel]`` extra), pgq keeps the W3C trace
context of each enqueue on the job (``pgq.jobs.trace_context``) and the runner runs every
attempt in a span of that trace:

- ``Client.enqueue`` / ``enqueue_many`` store the current context, as the configured
  propagator writes it (``traceparent``, ``tracestate``, ``baggage``): ``current()``.
- ``POST /jobs`` and ``POST /jobs/batch`` store the request's ``traceparent`` and
  ``tracestate`` headers (``from_headers``; plain header parsing, so a coordinator needs no
  OpenTelemetry for its callers' traces to reach the runners).
- The runner opens a CONSUMER span ``process <type>`` per attempt, child of the stored
  context (a new trace when there is none), current while the handler runs (so the
  handler's own spans, on the event loop or on a sync handler's thread, are its children),
  ended once the outcome is written (none for a job without a stored context while no SDK
  is installed: such a span records nothing and carries nothing on); attributes follow the
  messaging semantic conventions
  (``messaging.system = "pgq"``, the queue as ``messaging.destination.name``, the job id as
  ``messaging.message.id``) plus ``pgq.job.type``, ``pgq.job.attempt`` and
  ``pgq.outcome``; a failed attempt records its exception and an error status.

Without the package ``ENABLED`` is False, decided once at import: the runner tests that
flag per job and does nothing else, and ``current()`` returns None.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .jobs import Job

try:
    from opentelemetry import context as _context
    from opentelemetry import propagate as _propagate
    from opentelemetry import trace as _trace
except ImportError:  # the [otel] extra is not installed
    ENABLED = False
else:
    ENABLED = True
    _tracer = _trace.get_tracer("pgq")
    #: what ``get_tracer_provider()`` returns while no SDK provider was set
    _NO_SDK = (_trace.ProxyTracerProvider, _trace.NoOpTracerProvider)

__all__ = ["ENABLED", "Attempt", "attempt", "current", "from_headers"]

#: W3C Trace Context: version-traceid-parentid-flags, lowercase hex; a later version may
#: append fields after another "-". Version ff and all-zero ids are invalid.
_TRACEPARENT = re.compile(
    r"(?!ff)[0-9a-f]{2}-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}"
)
#: Longest tracestate kept (the spec asks propagators to keep at least 512 characters).
MAX_TRACESTATE = 512
#: What a tracestate is made of (list members of printable ASCII); anything else is dropped.
_TRACESTATE = re.compile(r"[\x20-\x7e]*")

#: Outcomes (``pgq.runner.outcome.Outcome`` values) that mark the span as an error; the
#: others succeeded, or were not the handler's doing (cancelled, lost, released).
_FAILED = frozenset({"error", "permanent", "retry_later", "timeout"})


def current() -> dict[str, str] | None:
    """The current trace context as the configured propagator writes it, or None (no
    OpenTelemetry, or nothing to propagate)."""
    if not ENABLED:
        return None
    carrier: dict[str, str] = {}
    _propagate.inject(carrier)
    return carrier or None


def from_headers(headers: Mapping[str, str]) -> dict[str, str] | None:
    """``traceparent`` (and ``tracestate``) from HTTP request headers, or None when there is
    no valid ``traceparent`` (an invalid one is ignored, as W3C Trace Context asks)."""
    traceparent = headers.get("traceparent")
    if traceparent is None:
        return None
    traceparent = traceparent.strip()
    if _TRACEPARENT.match(traceparent) is None:
        return None
    if len(traceparent) != 55 and (traceparent[:2] == "00" or traceparent[55] != "-"):
        return None  # version 00 has exactly four fields; later ones may add "-…"
    context = {"traceparent": traceparent}
    tracestate = headers.get("tracestate")
    if tracestate and len(tracestate) <= MAX_TRACESTATE and _TRACESTATE.fullmatch(tracestate):
        context["tracestate"] = tracestate.strip()
    return context


def attempt(job: Job, worker_id: str) -> Attempt | None:
    """The span of the job's attempt, made current; None when it could change nothing: the
    job carries no trace context and no SDK is installed (pgq's tracer is still the API's
    proxy and no tracer provider was set), so the span would be an invalid, non-recording
    one with nothing to propagate. Making it anyway was ~11 % of a no-op drain's Python
    profile. With a context, the span is made even without an SDK: the handler's own
    outgoing calls then carry the enqueue's trace on. Only called when ``ENABLED``."""
    if (
        job.trace_context is None
        and isinstance(_tracer, _trace.ProxyTracer)
        and isinstance(_trace.get_tracer_provider(), _NO_SDK)
    ):
        return None
    return Attempt(job, worker_id)


class Attempt:
    """The span of one attempt of a job: made current at creation (in the job's task),
    given the outcome with ``outcome()``, ended (and no longer current) by ``end()``.
    Only made when ``ENABLED``."""

    __slots__ = ("_span", "_token")

    def __init__(self, job: Job, worker_id: str) -> None:
        parent = _propagate.extract(job.trace_context or {})
        self._span = _tracer.start_span(
            f"process {job.type}",
            context=parent,
            kind=_trace.SpanKind.CONSUMER,
            attributes={
                "messaging.system": "pgq",
                "messaging.operation": "process",
                "messaging.operation.type": "process",
                "messaging.operation.name": "process",
                "messaging.destination.name": job.queue,
                "messaging.message.id": str(job.id),
                "messaging.client.id": worker_id,
                "pgq.job.type": job.type,
                "pgq.job.attempt": job.attempt,
            },
        )
        self._token = _context.attach(_trace.set_span_in_context(self._span, parent))

    def outcome(self, outcome: str, detail: Any) -> None:
        """What became of the attempt (an ``Outcome``; the last call wins): ``detail`` is
        the exception of a failed attempt, or the timeout in seconds for TIMEOUT."""
        span = self._span
        span.set_attribute("pgq.outcome", str(outcome))
        if outcome in _FAILED:
            if isinstance(detail, BaseException):
                span.record_exception(detail)
                message = str(detail) or type(detail).__name__
            else:
                message = f"handler timed out after {detail:g}s"
            span.set_status(_trace.Status(_trace.StatusCode.ERROR, message))

    def end(self) -> None:
        _context.detach(self._token)
        self._span.end()
