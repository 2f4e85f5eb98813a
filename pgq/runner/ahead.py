"""Jobs a runner claimed beyond its free slots and has not started yet (claim-ahead).

With short handlers, a claim that only filled the free slots would leave them idle for
every claim's round trip: the slots free while the next claim is in flight. So the runner
also claims the jobs expected to finish during that round trip (concurrency × round trip ÷
mean handler run, at most one more batch: it never holds more than twice its concurrency)
and keeps them here, in claim order, until slots free. Handlers longer than a round trip
get none, so a job claimed ahead waits about one round trip, not a handler's run.

A job claimed ahead is held (its lease runs from the claim) but not started. It leaves
this queue by starting, by being released (it waited too long, or the runner stopped), or
because it went away (cancelled, lease lost: ``forget``).
"""

from __future__ import annotations

from collections import deque

from ..jobs import Job

__all__ = ["ClaimedAhead"]

#: Weight of the newest round trip in the moving average.
ROUND_TRIP_WEIGHT = 0.2


class ClaimedAhead:
    """The jobs claimed ahead, in claim order, with the loop time each claim was sent."""

    def __init__(self) -> None:
        self._queue: deque[tuple[Job, float]] = deque()
        #: which queued entries are still ours: job id → attempt (the queue may hold
        #: entries of jobs that went away since; they are skipped when popped)
        self._held: dict[int, int] = {}
        #: moving average of the round trip of claims that came back full (seconds)
        self.round_trip: float | None = None

    def __len__(self) -> int:
        """Jobs still ours and not started."""
        return len(self._held)

    @property
    def waiting(self) -> bool:
        """Whether anything is queued (possibly only entries of jobs gone meanwhile)."""
        return bool(self._queue)

    def observe_round_trip(self, seconds: float) -> None:
        """A claim that came back full took ``seconds`` (a short one may have waited for
        work, a long poll, so it says nothing about the round trip)."""
        rtt = self.round_trip
        self.round_trip = seconds if rtt is None else rtt + (seconds - rtt) * ROUND_TRIP_WEIGHT

    def extra(self, concurrency: int, mean_run: float | None) -> int:
        """How many jobs to claim beyond the free slots: those expected to finish while
        the claim is in flight, at most ``concurrency``; none until both a round trip and
        a handler run have been measured."""
        if self.round_trip is None or mean_run is None:
            return 0
        return min(concurrency, int(concurrency * self.round_trip / max(mean_run, 1e-6)))

    def add(self, job: Job, sent: float) -> None:
        self._held[job.id] = job.attempt
        self._queue.append((job, sent))

    def next(self) -> tuple[Job, float] | None:
        """The oldest job still ours with its claim's send time, no longer kept here; None
        when there is none."""
        queue, held = self._queue, self._held
        while queue:
            job, sent = queue.popleft()
            if held.get(job.id) == job.attempt:
                del held[job.id]
                return job, sent
        return None

    def forget(self, job_id: int) -> int | None:
        """The job went away (cancelled, lease lost): never start it. Returns the attempt
        that was kept, or None when the job was not here."""
        return self._held.pop(job_id, None)

    def take_all(self) -> list[Job]:
        """Every job still ours, in claim order, none kept any more (stopping)."""
        return [job for job, _sent in iter(self.next, None)]

    def clear(self) -> None:
        self._queue.clear()
        self._held.clear()
