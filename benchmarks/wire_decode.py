"""Decode + validate cost of request bodies: pgq.wire (msgspec) beside the alternatives.

    python -m benchmarks.wire_decode                 # pgq.wire, orjson alone, pydantic v2
    python -m benchmarks.wire_decode --old 1ebecd1   # also the hand-written validator
                                                     # (pgq/coordinator/validation.py at that
                                                     # commit, the last that had it)

Measures one ``POST /jobs`` body and one ``POST /jobs/batch`` body of 10,000 jobs, each
decoded from bytes into checked values (what the coordinator does before the query
layer). ``orjson.loads`` alone is the floor: parsing with no checks. pydantic is measured
only when installed (it is not a pgq dependency): a strict model with the same rules.
Prints the best of ``--repeat`` timings (the least disturbed by other processes on a
shared machine), in µs per body and ms per batch.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from pgq import wire

REPO = Path(__file__).resolve().parent.parent

JOB = {
    "type": "TMDB_SYNC",
    "arguments": {"movie_id": 603, "language": "en-US", "fields": ["title", "cast", "crew"]},
    "queue": "sync",
    "priority": 5,
    "max_attempts": 5,
    "timeout_seconds": 120,
    "idempotency_key": "tmdb-603",
}
ONE = orjson.dumps(JOB)
BATCH = orjson.dumps({"jobs": [{**JOB, "idempotency_key": f"tmdb-{i}"} for i in range(10_000)]})


def timed(fn: Callable[[], Any], number: int, repeat: int) -> float:
    """Best seconds per call over ``repeat`` rounds of ``number`` calls."""
    rounds = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        rounds.append((time.perf_counter() - start) / number)
    return min(rounds)


def old_validator(rev: str) -> Any:
    """``pgq/coordinator/validation.py`` as of ``rev``, imported inside ``pgq.coordinator``
    (its relative imports still resolve: the errors it uses are re-exported there)."""
    source = subprocess.run(
        ["git", "show", f"{rev}:pgq/coordinator/validation.py"],
        cwd=REPO,
        check=True,
        capture_output=True,
    ).stdout
    path = Path(tempfile.mkdtemp()) / "validation.py"
    path.write_bytes(source)
    spec = importlib.util.spec_from_file_location("pgq.coordinator._old_validation", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def pydantic_models() -> tuple[Any, Any] | None:
    try:
        import pydantic
    except ImportError:
        return None
    from datetime import datetime
    from typing import Annotated

    from pydantic import BaseModel, ConfigDict, Field, StringConstraints

    NoNul = StringConstraints(min_length=1, max_length=255, pattern=wire.NO_NUL_PATTERN)

    class NewJob(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=True)
        type: Annotated[str, StringConstraints(pattern=wire.TYPE_PATTERN)]
        arguments: dict[str, Any] = Field(default_factory=dict)
        queue: Annotated[str, StringConstraints(pattern=wire.QUEUE_PATTERN)] = "default"
        priority: int = Field(0, ge=wire.PRIORITY_MIN, le=wire.PRIORITY_MAX)
        run_at: datetime | None = None
        delay_seconds: float | None = Field(None, ge=0, le=wire.MAX_DELAY_SECONDS)
        max_attempts: int = Field(10, ge=1, le=wire.MAX_ATTEMPTS)
        timeout_seconds: int = Field(300, ge=1, le=wire.MAX_TIMEOUT_SECONDS)
        idempotency_key: Annotated[str, NoNul] | None = None
        depends_on: list[Annotated[int, Field(ge=1, le=wire.BIGINT_MAX)]] | None = Field(
            None, max_length=wire.MAX_DEPENDS_ON
        )

        @pydantic.model_validator(mode="after")
        def _one_of(self) -> NewJob:
            if self.run_at is not None and self.delay_seconds is not None:
                raise ValueError("give run_at or delay_seconds, not both")
            return self

    class Batch(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=True)
        jobs: list[NewJob] = Field(min_length=1, max_length=wire.MAX_BATCH_JOBS)

    return NewJob, Batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old", metavar="REV", help="also time validation.py as of this commit")
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()

    candidates: dict[str, tuple[Callable[[], Any], Callable[[], Any]]] = {
        "orjson.loads (no checks)": (lambda: orjson.loads(ONE), lambda: orjson.loads(BATCH)),
        "pgq.wire (msgspec)": (
            lambda: wire.request_body(ONE, wire.NewJob),
            lambda: wire.request_body(BATCH, wire.Batch),
        ),
    }
    if args.old:
        v = old_validator(args.old)

        def old(raw: bytes, parse: Callable[[Any], Any]) -> Any:
            # as read_body did: the deep walk only when the bytes could break its rules
            deep = b"\\u0000" in raw or raw.count(b"{") + raw.count(b"[") > v.MAX_JSON_DEPTH
            return parse(v.Body(orjson.loads(raw), deep_check=deep))

        def old_one() -> Any:
            return old(ONE, v.parse_new_job)

        def old_batch() -> Any:
            return old(BATCH, v.parse_batch)

        candidates[f"hand-written ({args.old})"] = (old_one, old_batch)
    models = pydantic_models()
    if models is not None:
        import pydantic

        NewJob, Batch = models
        candidates[f"pydantic {pydantic.VERSION}"] = (
            lambda: NewJob.model_validate_json(ONE),
            lambda: Batch.model_validate_json(BATCH),
        )
    else:
        print("(pydantic not installed: not measured)")

    print(f"one body: {len(ONE)} bytes; batch: 10,000 jobs, {len(BATCH) / 1e6:.1f} MB")
    print(f"{'':28} {'µs per body':>12} {'ms per batch':>13}")
    for name, (one, batch) in candidates.items():
        per_one = timed(one, 20_000, args.repeat)
        per_batch = timed(batch, 3, args.repeat)
        print(f"{name:28} {per_one * 1e6:12.2f} {per_batch * 1e3:13.1f}")


if __name__ == "__main__":
    main()
