"""``Backoff``: the one exponential backoff with jitter that every retry loop in pgq uses.

::

    backoff = Backoff(0.1, 5.0)            # equal jitter (the default)
    while True:
        try:
            await connect()
            break
        except DatabaseUnavailable:
            await asyncio.sleep(backoff.next())
    backoff.reset()                        # after a success: start small again

The n-th delay (n = 0, 1, …) is ``d = min(cap, base · 2ⁿ)`` scaled by a random factor in
``[1 − jitter, 1]``: ``jitter=1`` is *full* jitter (anywhere in ``[0, d]``), ``0.5`` is
*equal* jitter (``[d/2, d]``), ``0`` none. Jitter keeps many clients that lost the same
server from coming back in step; equal jitter also keeps a floor, so a loop never spins.
"""

from __future__ import annotations

import random

__all__ = [
    "EQUAL",
    "FULL",
    "RECONNECT_BASE",
    "RECONNECT_CAP",
    "Backoff",
    "recheck_delay",
    "reconnecting",
]

#: ``jitter=FULL``: each delay anywhere in ``[0, d]``.
FULL = 1.0
#: ``jitter=EQUAL``: each delay in ``[d/2, d]``.
EQUAL = 0.5

#: Reaching the database or the coordinator again: from 0.1 s, doubling up to 1 s. The cap
#: is what a process adds to an outage: with it, listeners, claims and start-up are back
#: within about a second of the database answering again. A refused connection costs the
#: server next to nothing, so retrying once a second (jittered) during an outage is cheap.
RECONNECT_BASE = 0.1
RECONNECT_CAP = 1.0

#: The jitter's source for every ``Backoff`` not given its own. A ``random.Random()`` made
#: per ``Backoff`` seeds itself from ``os.urandom``, and the runner makes a ``Backoff`` for
#: every outcome it writes: that seeding was ~12 % of a drain's Python profile.
_SHARED_RNG = random.Random()


class Backoff:
    """Exponential backoff from ``base`` seconds, doubling up to ``cap``, with ``jitter``
    (see the module docstring). ``rng``: a ``random.Random`` (tests pass a seeded one)."""

    __slots__ = ("_failures", "_rng", "base", "cap", "jitter")

    def __init__(
        self,
        base: float,
        cap: float,
        *,
        jitter: float = EQUAL,
        rng: random.Random | None = None,
    ) -> None:
        if not 0 < base <= cap:
            raise ValueError(f"need 0 < base <= cap, not base={base!r}, cap={cap!r}")
        if not 0 <= jitter <= 1:
            raise ValueError(f"jitter must be in [0, 1], not {jitter!r}")
        self.base = float(base)
        self.cap = float(cap)
        self.jitter = float(jitter)
        self._rng = rng or _SHARED_RNG
        self._failures = 0

    @property
    def failures(self) -> int:
        """Delays handed out since the last ``reset()``."""
        return self._failures

    def peek(self) -> float:
        """The un-jittered ceiling of the next delay."""
        # 2ⁿ stops growing once past the cap, so a long outage cannot overflow it.
        return min(self.cap, self.base * 2.0 ** min(self._failures, 64))

    def next(self) -> float:
        """The next delay in seconds; each call doubles the ceiling, up to ``cap``."""
        ceiling = self.peek()
        self._failures += 1
        return ceiling * (1.0 - self.jitter * self._rng.random())

    def reset(self) -> None:
        """Back to ``base``: call after a success."""
        self._failures = 0


def reconnecting() -> Backoff:
    """The backoff of every loop that waits for the database or the coordinator to come
    back (runner start and claims, coordinator start; the ``Listener`` uses the same cap
    with full jitter)."""
    return Backoff(RECONNECT_BASE, RECONNECT_CAP)


def recheck_delay(interval: float) -> float:
    """The delay of a periodic safety re-check: ``interval`` plus 0-10 % jitter (River's
    producer), so processes started together do not re-check in step."""
    return interval * _SHARED_RNG.uniform(1.0, 1.1)
