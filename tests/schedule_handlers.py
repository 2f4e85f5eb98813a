"""A runner for schedule process tests: `python -m pgq runner tests.schedule_handlers:runner`.

It declares ``tick`` (every two seconds, ``TICK`` jobs) next to its handler, as an
application would; every process that runs it upserts the same declaration at start.
"""

from __future__ import annotations

import pgq

runner = pgq.Runner()
runner.schedule("tick", "*/2 * * * * *", "TICK", {"from": "code"})


@runner.handler("TICK")
async def tick(job: pgq.Job) -> dict[str, str | None]:
    return {"slot": job.scheduled_for.isoformat() if job.scheduled_for else None}
