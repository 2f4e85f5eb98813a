"""JSON Schema of the wire types, generated for the OpenAPI document's components."""

from __future__ import annotations

import functools
from typing import Any

import msgspec

from . import answers as a
from . import requests as r

#: Every Struct that is a request or response body (nested ones follow by reference).
BODIES: tuple[type[msgspec.Struct], ...] = (
    r.NewJob,
    r.Batch,
    r.Claim,
    r.Complete,
    r.CompleteBatch,
    r.Heartbeat,
    r.Release,
    r.Retry,
    r.Progress,
    r.BulkRetry,
    r.BulkCancel,
    r.Limits,
    r.NewSchedule,
    a.Job,
    a.JobSummary,
    a.Jobs,
    a.ClaimedJobs,
    a.CompletedJobs,
    a.CreatedJobs,
    a.JobPage,
    a.Queue,
    a.Queues,
    a.Schedule,
    a.Schedules,
    a.Count,
    a.Session,
    a.Overview,
    a.JobErrors,
    a.Error,
)

_REF = "#/components/schemas/{name}"


@functools.cache
def schemas() -> dict[str, Any]:
    """OpenAPI ``components.schemas``: one per body Struct, plus the rules across fields."""
    _, components = msgspec.json.schema_components(BODIES, ref_template=_REF)
    for name, extra in r.CROSS_FIELD_SCHEMAS.items():
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
