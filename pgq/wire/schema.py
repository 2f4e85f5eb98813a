"""JSON Schema of the wire types, generated for the OpenAPI document's components."""

from __future__ import annotations

import functools
from typing import Any

import msgspec

from . import types as t

#: Every Struct that is a request or response body (nested ones follow by reference).
BODIES: tuple[type[msgspec.Struct], ...] = (
    t.NewJob,
    t.Batch,
    t.Claim,
    t.Complete,
    t.CompleteBatch,
    t.Heartbeat,
    t.Release,
    t.Retry,
    t.Progress,
    t.BulkRetry,
    t.BulkCancel,
    t.Limits,
    t.NewSchedule,
    t.Job,
    t.JobSummary,
    t.Jobs,
    t.ClaimedJobs,
    t.CompletedJobs,
    t.CreatedJobs,
    t.JobPage,
    t.Queue,
    t.Queues,
    t.Schedule,
    t.Schedules,
    t.Count,
    t.Session,
    t.Overview,
    t.JobErrors,
    t.Error,
)

_REF = "#/components/schemas/{name}"


@functools.cache
def schemas() -> dict[str, Any]:
    """OpenAPI ``components.schemas``: one per body Struct, plus the rules across fields."""
    _, components = msgspec.json.schema_components(BODIES, ref_template=_REF)
    for name, extra in t.CROSS_FIELD_SCHEMAS.items():
        components[name].update(extra)
    return components


def query_parameters(type_: type[msgspec.Struct]) -> list[dict[str, Any]]:
    """OpenAPI ``parameters`` (``in: query``) for the fields of a query-string Struct."""
    _, components = msgspec.json.schema_components([type_], ref_template=_REF)
    schema = components[type_.__name__]
    out = []
    for name, prop in schema["properties"].items():
        param: dict[str, Any] = {"name": name, "in": "query", "schema": dict(prop)}
        if "description" in prop:
            param["description"] = param["schema"].pop("description")
        out.append(param)
    return out
