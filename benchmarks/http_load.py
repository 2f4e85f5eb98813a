"""HTTP pieces of the benchmark (pgq only): a bare aiohttp JSON endpoint as the
ceiling, and a small closed-loop load generator.

    python benchmarks/http_load.py ceiling PORT
        POST /jobs: parse the JSON body, answer 201 with a job-shaped JSON object.
        No database: what one aiohttp process can do on this machine.
    python benchmarks/http_load.py post URL --connections C --seconds T
        C concurrent clients, each POSTing {"type": "NOOP", "arguments": {"i": n}}
        to URL/jobs back to back for T seconds.
    python benchmarks/http_load.py claim-complete URL --connections C --seconds T
        C concurrent HTTP runners, each: POST /jobs/claim (max_jobs 1, no wait),
        then POST /jobs/{id}/complete, back to back for T seconds.

The load generators print one JSON line: requests/s, latency percentiles (ms),
status counts; the claim-complete mode also the completed job ids' count.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import aiohttp
import orjson
from aiohttp import web


def ceiling(port: int) -> None:
    counter = iter(range(1, 1 << 62))

    async def post_job(request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        job = {
            "id": next(counter),
            "type": body["type"],
            "queue": "default",
            "status": "queued",
            "arguments": body.get("arguments", {}),
            "priority": 0,
            "attempts": 0,
        }
        return web.Response(body=orjson.dumps(job), status=201, content_type="application/json")

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_post("/jobs", post_job)
    app.router.add_get("/health", health)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[max(0, min(len(s) - 1, -(-len(s) * p // 100) - 1))] if s else float("nan")


async def load(mode: str, url: str, connections: int, seconds: float) -> dict:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    completed = 0
    empty_claims = 0
    counter = iter(range(1 << 62))
    headers = {"Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(url, connector=connector, headers=headers) as session:

        async def request(path: str, body: dict) -> tuple[int, dict]:
            t = time.monotonic()
            async with session.post(path, data=orjson.dumps(body)) as resp:
                data = await resp.read()
                latencies.append((time.monotonic() - t) * 1000)
                statuses[resp.status] = statuses.get(resp.status, 0) + 1
                return resp.status, orjson.loads(data) if data else {}

        async def poster(deadline: float) -> None:
            while time.monotonic() < deadline:
                await request("/jobs", {"type": "NOOP", "arguments": {"i": next(counter)}})

        async def claimer(k: int, deadline: float) -> None:
            nonlocal completed, empty_claims
            worker = f"loadgen-{k}"
            while time.monotonic() < deadline:
                _, answer = await request("/jobs/claim", {"worker_id": worker, "max_jobs": 1})
                jobs = answer.get("jobs", [])
                if not jobs:
                    empty_claims += 1
                    continue
                job = jobs[0]
                body = {
                    "worker_id": worker,
                    "success": True,
                    "attempt": job.get("attempts"),
                    "lease_token": job.get("lease_token"),
                }
                status, _ = await request(f"/jobs/{job['id']}/complete", body)
                if status == 200:  # a refused completion left the job running: not done
                    completed += 1

        # Warm-up (connections, prepared statements) outside the measurement.
        warm = time.monotonic() + min(1.0, seconds / 5)
        if mode == "post":
            await asyncio.gather(*(poster(warm) for _ in range(connections)))
        warmup_created = statuses.get(201, 0)
        latencies.clear()
        statuses.clear()
        completed = empty_claims = 0
        t0 = time.monotonic()
        deadline = t0 + seconds
        if mode == "post":
            await asyncio.gather(*(poster(deadline) for _ in range(connections)))
        else:
            await asyncio.gather(*(claimer(k, deadline) for k in range(connections)))
        elapsed = time.monotonic() - t0
    return {
        "requests": len(latencies),
        "requests_per_s": len(latencies) / elapsed,
        "p50_ms": pct(latencies, 50),
        "p99_ms": pct(latencies, 99),
        "max_ms": max(latencies, default=float("nan")),
        "statuses": {str(k): v for k, v in statuses.items()},
        "completed": completed,
        "jobs_per_s": completed / elapsed,
        "empty_claims": empty_claims,
        "created_total": warmup_created + statuses.get(201, 0),
    }


def main() -> None:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("ceiling")
    s.add_argument("port", type=int)
    for mode in ("post", "claim-complete"):
        s = sub.add_parser(mode)
        s.add_argument("url")
        s.add_argument("--connections", type=int, default=16)
        s.add_argument("--seconds", type=float, default=10)
    a = p.parse_args()
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    if a.cmd == "ceiling":
        ceiling(a.port)
    else:
        print(json.dumps(asyncio.run(load(a.cmd, a.url, a.connections, a.seconds))), flush=True)


if __name__ == "__main__":
    main()
