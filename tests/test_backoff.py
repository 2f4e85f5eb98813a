"""``pgq.backoff.Backoff``: the one backoff formula of every retry loop in pgq."""

from __future__ import annotations

import random

import pytest

from pgq.backoff import EQUAL, FULL, Backoff, recheck_delay, reconnecting


def test_the_ceiling_doubles_from_base_up_to_the_cap_and_reset_starts_over() -> None:
    backoff = Backoff(0.1, 1.0, jitter=0)
    delays = [backoff.next() for _ in range(6)]
    assert delays == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
    assert backoff.failures == 6
    backoff.reset()
    assert backoff.failures == 0
    assert backoff.next() == pytest.approx(0.1)


def test_equal_jitter_stays_in_the_upper_half_and_full_jitter_spans_zero_to_the_ceiling() -> None:
    equal = Backoff(1.0, 1.0, jitter=EQUAL, rng=random.Random(1))
    full = Backoff(1.0, 1.0, jitter=FULL, rng=random.Random(1))
    equal_delays = [equal.next() for _ in range(2000)]
    full_delays = [full.next() for _ in range(2000)]
    assert all(0.5 < d <= 1.0 for d in equal_delays)
    assert all(0.0 < d <= 1.0 for d in full_delays)
    # Spread over the whole range, not clustered (a seeded generator: deterministic).
    assert min(equal_delays) < 0.51 and max(equal_delays) > 0.99
    assert min(full_delays) < 0.01 and sum(d < 0.5 for d in full_delays) > 900


def test_a_seeded_generator_gives_the_same_delays() -> None:
    a = Backoff(0.05, 2.0, rng=random.Random(42))
    b = Backoff(0.05, 2.0, rng=random.Random(42))
    assert [a.next() for _ in range(10)] == [b.next() for _ in range(10)]


def test_making_a_backoff_reads_no_entropy(monkeypatch: pytest.MonkeyPatch) -> None:
    # The runner makes one per outcome it writes (thousands a second): seeding a generator
    # from os.urandom each time was a tenth of a drain's Python time.
    seeded: list[object] = []
    monkeypatch.setattr(random.Random, "seed", lambda self, *a, **k: seeded.append(a))
    backoffs = [Backoff(0.05, 2.0) for _ in range(100)]
    assert seeded == []
    delays = {b.next() for b in backoffs}
    assert len(delays) > 90  # still jittered, each its own draw
    assert all(0.025 <= d <= 0.05 for d in delays)


def test_a_long_outage_stays_at_the_cap() -> None:
    backoff = Backoff(0.1, 5.0, jitter=0)
    for _ in range(10_000):
        delay = backoff.next()
    assert delay == 5.0


def test_the_reconnect_policy_goes_from_a_tenth_of_a_second_to_one() -> None:
    # The cap is how late a process may notice the database is back after an outage.
    backoff = reconnecting()
    first = backoff.next()
    assert 0.05 <= first <= 0.1
    for _ in range(20):
        last = backoff.next()
    assert 0.5 <= last <= 1.0


@pytest.mark.parametrize(
    ("base", "cap", "jitter"), [(0, 1, 0.5), (-1, 1, 0.5), (2, 1, 0.5), (1, 1, 1.5), (1, 1, -0.1)]
)
def test_bad_parameters_are_refused(base: float, cap: float, jitter: float) -> None:
    with pytest.raises(ValueError):
        Backoff(base, cap, jitter=jitter)


def test_a_recheck_delay_is_the_interval_plus_up_to_ten_percent() -> None:
    delays = [recheck_delay(60.0) for _ in range(1000)]
    assert all(60.0 <= d <= 66.0 for d in delays)
    assert max(delays) - min(delays) > 3.0  # spread over the band, not one value
