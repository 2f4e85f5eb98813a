"""The wire types (``pgq.wire``): pgq's wording of each refusal, the generated JSON Schema
agreeing with the decoder, and the encoding an HTTP runner sends. No database needed: the
HTTP tests (test_http_bad_input, test_http_schemathesis) check the same rules end to end."""

from __future__ import annotations

import typing

import jsonschema
import msgspec
import orjson
import pytest

from pgq import wire
from pgq.errors import InvalidField, InvalidJson
from pgq.jobs import STATUSES
from pgq.wire.fields import Status

#: A well-formed lease token.
T = "00000000-0000-4000-8000-000000000000"


def refusal(type_: type[msgspec.Struct], body: object) -> str:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    with pytest.raises(InvalidField) as info:
        wire.request_body(raw, type_)
    return str(info.value)


@pytest.mark.parametrize(
    ("type_", "body", "message"),
    [
        (wire.NewJob, {}, "type: is required"),
        (wire.Complete, {"worker_id": "w"}, "success: is required (true or false)"),
        (
            wire.Retry,
            {"extra": 1},
            "extra: unknown field; known fields are extra_attempts",
        ),
        (
            wire.NewJob,
            {"type": "X", "priority": None},
            "priority: must not be null (leave the field out to use its default)",
        ),
        (wire.NewJob, {"type": "X", "priority": "5"}, "priority: must be an integer, not a string"),
        (
            wire.NewJob,
            {"type": "X", "priority": True},
            "priority: must be an integer, not a boolean",
        ),
        (
            wire.NewJob,
            {"type": "X", "priority": 40000},
            "priority: must be an integer between -32768 and 32767",
        ),
        (
            wire.NewJob,
            {"type": "X", "delay_seconds": -1},
            "delay_seconds: must be a number between 0 and 3.1536e+08",
        ),
        (
            wire.NewJob,
            {"type": "X", "queue": "Default"},
            "queue: 'Default' is invalid: use a lowercase letter, then up to 47 of a-z 0-9 _",
        ),
        (
            wire.Claim,
            {"worker_id": "w", "types": ["ok", "not ok"]},
            "types[1]: 'not ok' is invalid: use 1-128 characters of A-Z a-z 0-9 _ . : -",
        ),
        (wire.Claim, {"worker_id": ""}, "worker_id: must be 1 to 255 characters, not 0"),
        (
            wire.Claim,
            {"worker_id": "w\u0000"},
            "worker_id: must not contain a NUL character (\\u0000)",
        ),
        (wire.Claim, {"worker_id": "w", "queues": []}, "queues: must have 1 to 100 items, not 0"),
        (
            wire.NewJob,
            {"type": "X", "run_at": "2030-01-01T00:00:00"},
            "run_at: must be an RFC 3339 date-time with an offset, e.g. 2030-01-01T12:00:00Z",
        ),
        (
            wire.NewJob,
            {"type": "X", "run_at": "1969-12-31T23:59:59Z"},
            "run_at: must be between 1970-01-01T00:00:00Z and 9999-12-31T00:00:00Z",
        ),
        (
            wire.Batch,
            {
                "jobs": [
                    {"type": "X"},
                    {"type": "X", "run_at": "2030-01-01T00:00:00Z", "delay_seconds": 1},
                ]
            },
            "jobs[1].delay_seconds: give run_at or delay_seconds, not both",
        ),
        (wire.Batch, {"jobs": [{"type": "X"}, []]}, "jobs[1]: must be a JSON object, not an array"),
        (
            wire.Complete,
            {"worker_id": "w", "lease_token": T, "success": False, "error": 5},
            "error: must be a string or an object, not a number",
        ),
        (
            wire.Complete,
            {"worker_id": "w", "lease_token": T, "success": True, "retryable": False},
            "retryable: is only allowed with success: false",
        ),
        (
            wire.Complete,
            {"worker_id": "w", "lease_token": T, "success": False, "result": 1},
            "result: is only allowed with success: true",
        ),
        (
            wire.NewJob,
            {"type": "X", "arguments": {"a": [{"b": "x\u0000"}]}},
            "arguments.a[0].b: must not contain a NUL character (\\u0000)",
        ),
        (
            wire.NewJob,
            b'{"type": "X", "arguments": {"a": ' + b"[" * 64 + b"]" * 64 + b"}}",
            "arguments: nests deeper than 64 levels",
        ),
        (
            wire.Complete,
            {"worker_id": "w", "lease_token": T, "success": True, "result": {"k\u0000": 1}},
            "result: has a key with a NUL character (\\u0000)",
        ),
        (
            wire.Release,
            b'{"worker_id": "w", "lease_token": "'
            + T.encode()
            + b'", "attempt": 1, "reason": {"n": [-2142912074015264052042023]}}',
            "reason.n[0]: is an integer beyond 64 bits: send it as a string",
        ),
        (
            wire.Complete,
            b'{"worker_id": "w", "lease_token": "'
            + T.encode()
            + b'", "success": true, "result": 18446744073709551616}',
            "result: is an integer beyond 64 bits: send it as a string",
        ),
        # Stricter than the hand-written parser it replaced, which took 3.0 for 3.
        (
            wire.NewJob,
            {"type": "X", "max_attempts": 3.0},
            "max_attempts: must be an integer, not a number",
        ),
    ],
)
def test_each_refusal_is_worded_the_pgq_way_and_names_the_field(
    type_: type[msgspec.Struct], body: object, message: str
) -> None:
    assert refusal(type_, body) == message


@pytest.mark.parametrize(
    "raw", [b"", b"[]", b'{"type": "X",', b'{"type": "X", "priority": 1e400}', b"[" * 5000]
)
def test_what_is_not_a_json_object_is_invalid_json(raw: bytes) -> None:
    with pytest.raises(InvalidJson):
        wire.request_body(raw, wire.NewJob)


def _batch(results: list[bytes]) -> bytes:
    items = b",".join(
        b'{"id": %d, "lease_token": "%s", "result": %s}' % (i + 1, T.encode(), r)
        for i, r in enumerate(results)
    )
    return b'{"worker_id": "w", "completions": [' + items + b"]}"


def test_a_batch_of_many_shallow_values_is_accepted_and_a_deep_one_in_it_refused() -> None:
    # Hundreds of brackets in all, none deep: accepted (and cleared without walking each).
    shallow = [b'{"a": [1, {"b": "]]]}}}"}]}'] * 300
    batch = wire.request_body(_batch(shallow), wire.CompleteBatch)
    assert len(batch.completions) == 300
    # One value 65 levels deep among them is found, wherever it is: closing brackets in
    # strings before it must not hide its depth, nor must mixed [{ nesting.
    deep = b"[" * 65 + b"]" * 65
    hiding = b'["' + b"]" * 200 + b'", ' + deep + b"]"
    alternating = b'[{"a": ' * 33 + b"1" + b"}]" * 33
    for results, where in (
        ([*shallow[:57], deep, *shallow[57:]], "completions[57].result"),
        ([*shallow[:3], hiding], "completions[3].result"),
        ([alternating, *shallow], "completions[0].result"),
    ):
        assert refusal(wire.CompleteBatch, _batch(results)) == (
            f"{where}: nests deeper than 64 levels"
        )


def test_a_depth_of_exactly_the_limit_and_defaults_are_accepted() -> None:
    raw = b'{"type": "X", "arguments": {"a": ' + b"[" * 63 + b"]" * 63 + b"}}"
    job = wire.request_body(raw, wire.NewJob)
    assert (job.queue, job.priority, job.max_attempts, job.timeout_seconds) == (
        "default",
        0,
        10,
        300,
    )
    assert job.run_at is wire.UNSET and job.depends_on is wire.UNSET


def test_query_strings_take_plain_digits_only() -> None:
    assert wire.query([("limit", "7")], wire.ListQuery).limit == 7
    for bad in ("1e3", "5.0", "+5", " 5", "٣"):
        with pytest.raises(InvalidField, match="limit: must be an integer between 1 and 1000"):
            wire.query([("limit", bad)], wire.ListQuery)
    with pytest.raises(InvalidField, match="wait: must be a number between 0 and 60"):
        wire.query([("wait", "nan")], wire.WaitQuery)
    with pytest.raises(InvalidField, match="status: given more than once"):
        wire.query([("status", "dead"), ("status", "dead")], wire.ListQuery)


def test_statuses_are_the_jobs_statuses() -> None:
    assert typing.get_args(Status) == STATUSES


def test_a_runner_encodes_only_what_it_sets() -> None:
    body = wire.Complete(worker_id="w", lease_token=T, success=False, error="boom", retryable=False)
    assert orjson.loads(msgspec.json.encode(body)) == {
        "worker_id": "w",
        "success": False,
        "lease_token": T,
        "error": "boom",
        "retryable": False,
    }
    with pytest.raises(ValueError, match="result: is only allowed with success: true"):
        wire.Complete(worker_id="w", lease_token=T, success=False, result=1)


SAMPLES: list[tuple[str, object]] = [
    ("NewJob", {"type": "X"}),
    ("NewJob", {"type": "X", "queue": "q1", "priority": -5, "arguments": {"a": [1, None]}}),
    ("NewJob", {"type": "X", "run_at": "2030-01-01T00:00:00Z"}),
    ("NewJob", {"type": "X", "run_at": "2030-01-01T00:00:00Z", "delay_seconds": 2}),
    ("NewJob", {"type": "X", "depends_on": [1, 2**63 - 1]}),
    ("NewJob", {"type": "X", "depends_on": [0]}),
    ("NewJob", {"type": "X", "idempotency_key": ""}),
    ("NewJob", {"type": "", "queue": "default"}),
    ("NewJob", {"type": "X", "timeout_seconds": 86_401}),
    ("NewJob", {"type": "X", "arguments": None}),
    ("Batch", {"jobs": [{"type": "X"}]}),
    ("Batch", {"jobs": []}),
    ("Batch", {"jobs": [{"type": "X", "extra": 1}]}),
    ("Claim", {"worker_id": "w", "max_jobs": 1000, "queues": ["a"], "wait_seconds": 0.5}),
    ("Claim", {"worker_id": "w", "max_jobs": 1001}),
    ("Claim", {"worker_id": "w", "types": ["a b"]}),
    ("Complete", {"worker_id": "w", "lease_token": T, "success": True, "result": None}),
    (
        "Complete",
        {
            "worker_id": "w",
            "lease_token": T,
            "success": False,
            "error": {"m": 1},
            "retry_delay_seconds": 0,
        },
    ),
    ("Complete", {"worker_id": "w", "lease_token": T, "success": True, "error": "x"}),
    ("Complete", {"worker_id": "w", "lease_token": T, "success": False, "result": 1}),
    (
        "Complete",
        {"worker_id": "w", "lease_token": T, "success": False, "retry_delay_seconds": 86_401},
    ),
    ("Heartbeat", {"worker_id": "w", "attempt": 1}),
    ("Heartbeat", {"worker_id": "w", "attempt": 1, "lease_token": T}),
    ("Heartbeat", {"worker_id": "w", "lease_token": T.upper()}),
    ("Heartbeat", {"worker_id": "w", "attempt": 0}),
    ("Release", {"worker_id": "w", "attempt": 2, "reason": "shutdown"}),
    ("Release", {"worker_id": "w", "attempt": 2, "lease_token": T, "reason": "shutdown"}),
    ("Release", {"worker_id": "w", "reason": "shutdown"}),
    ("Release", {"worker_id": "w", "attempt": 1, "reason": ""}),
    ("Retry", {}),
    ("Retry", {"extra_attempts": 1001}),
    ("Limits", {"concurrency": 3, "rate": 0.001, "burst": 2}),
    ("Limits", {"burst": 2}),
    ("Limits", {"rate": 0.0009}),
    ("Progress", {"worker_id": "w", "progress": {"done": 1}, "attempt": 1}),
    ("Progress", {"worker_id": "w", "progress": [1]}),
    ("BulkRetry", {"statuses": ["dead", "cancelled"], "spread_seconds": 60}),
    ("BulkRetry", {"statuses": ["queued"]}),
    ("BulkCancel", {"statuses": ["running"], "queue": "q", "type": "T"}),
    ("BulkCancel", {"spread_seconds": 1}),
    ("NewSchedule", {"cron": "0 3 * * *", "type": "T", "catch_up": "all", "paused": True}),
    ("NewSchedule", {"cron": "", "type": "T"}),
    ("NewSchedule", {"cron": "* * * * *", "type": "T", "catch_up": "some"}),
]


def test_catch_up_modes_are_the_wire_literal() -> None:
    from pgq.wire.fields import CatchUp

    assert set(typing.get_args(typing.get_args(CatchUp)[0])) == set(wire.CATCH_UP_MODES)


@pytest.mark.parametrize(("name", "body"), SAMPLES)
def test_the_generated_schema_and_the_decoder_agree(name: str, body: object) -> None:
    schema = {"$ref": f"#/components/schemas/{name}", "components": {"schemas": wire.schemas()}}
    by_schema = jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    ).is_valid(body)
    try:
        wire.request_body(orjson.dumps(body), getattr(wire, name))
        by_decoder = True
    except InvalidField:
        by_decoder = False
    assert by_schema == by_decoder


def test_the_runner_states_the_same_name_rules() -> None:
    from pgq import Runner

    with pytest.raises(ValueError, match=f"queue 'Default' is invalid: {wire.QUEUE_RULE}"):
        Runner(queues=["Default"])
    with pytest.raises(ValueError, match=f"job type 'a b' is invalid: {wire.TYPE_RULE}"):
        Runner().handler("a b")
    with pytest.raises(ValueError, match="worker_id must be 1-255 characters"):
        Runner(worker_id="w" * 256)
