"""``ClaimedAhead`` (pgq/runner/ahead.py) on its own: pure bookkeeping, no database. How a
runner uses it, against a real database and a real coordinator, is in test_runner.py."""

from __future__ import annotations

from datetime import UTC, datetime

from pgq.jobs import Job
from pgq.runner.ahead import ClaimedAhead


def job(job_id: int, attempt: int = 1) -> Job:
    return Job(
        id=job_id,
        type="T",
        queue="default",
        status="running",
        args={},
        priority=0,
        run_at=datetime.now(UTC),
        attempt=attempt,
        max_attempts=10,
        timeout_seconds=60,
    )


def test_jobs_come_out_in_claim_order_with_their_claims_send_time() -> None:
    ahead = ClaimedAhead()
    for i, sent in ((1, 10.0), (2, 10.0), (3, 11.5)):
        ahead.add(job(i), sent)
    assert len(ahead) == 3
    assert [(j.id, sent) for j, sent in iter(ahead.next, None)] == [
        (1, 10.0),
        (2, 10.0),
        (3, 11.5),
    ]
    assert len(ahead) == 0 and not ahead.waiting


def test_a_job_gone_while_it_waited_never_comes_out() -> None:
    ahead = ClaimedAhead()
    ahead.add(job(1), 0.0)
    ahead.add(job(2), 0.0)
    assert ahead.forget(1) == 1
    assert ahead.forget(1) is None  # already gone
    assert ahead.forget(99) is None  # never here
    assert len(ahead) == 1
    entry = ahead.next()
    assert entry is not None and entry[0].id == 2
    assert ahead.next() is None


def test_a_forgotten_job_claimed_again_comes_out_once_as_its_new_attempt() -> None:
    ahead = ClaimedAhead()
    ahead.add(job(1, attempt=1), 0.0)
    ahead.forget(1)  # its lease ran out ...
    ahead.add(job(1, attempt=2), 5.0)  # ... and this runner claimed it again
    out = list(iter(ahead.next, None))
    assert [(j.id, j.attempt, sent) for j, sent in out] == [(1, 2, 5.0)]


def test_take_all_returns_what_is_still_ours_and_keeps_nothing() -> None:
    ahead = ClaimedAhead()
    for i in (1, 2, 3):
        ahead.add(job(i), 0.0)
    ahead.forget(2)
    assert [j.id for j in ahead.take_all()] == [1, 3]
    assert len(ahead) == 0 and not ahead.waiting


def test_the_extra_follows_round_trip_over_run_time_capped_at_the_concurrency() -> None:
    ahead = ClaimedAhead()
    assert ahead.extra(100, 0.001) == 0  # no round trip measured yet
    ahead.observe_round_trip(0.010)
    assert ahead.extra(100, None) == 0  # no handler run measured yet
    assert ahead.extra(100, 0.050) == 20  # 100 slots x 10 ms / 50 ms
    assert ahead.extra(100, 0.001) == 100  # capped: at most twice the concurrency held
    assert ahead.extra(100, 1.0) == 1  # long handlers: next to none
    ahead.observe_round_trip(0.020)  # a moving average, not the last value
    assert ahead.round_trip is not None and 0.010 < ahead.round_trip < 0.020
