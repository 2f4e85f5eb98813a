"""Benchmark pgq against procrastinate and PgQueuer on the local Postgres.

    python -m benchmarks.run                 # full run (~15 min on 2 cores) -> RESULTS.md
    python -m benchmarks.run --smoke         # seconds; correctness checks only (CI)
    python -m benchmarks.run --systems pgq,pgqueuer --scenarios drain,latency

Each system runs through its adapter script (benchmarks/adapters/<system>_adapter.py)
under its own interpreter: the peers in virtualenvs under benchmarks/.venvs/ that this
script creates from PyPI (and reuses), pgq in this interpreter with the working tree on
PYTHONPATH. Every measurement gets a fresh database (bench_<system>), dropped WITH
(FORCE) afterwards; repetitions are interleaved across systems. A run counts only if
the database shows every job succeeded exactly once and the handlers ran each job once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import itertools
import json
import os
import platform
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
VENVS = HERE / ".venvs"
OUT = HERE / "out"

SYSTEMS = ("pgq", "procrastinate", "pgqueuer")
PEERS = ("procrastinate", "pgqueuer")
SCENARIOS = ("enqueue", "drain", "latency", "steady", "http", "http-runner", "scale")
# Scenarios only pgq has: its coordinator and its HTTP-mode runner.
ONLY_PGQ = ("http", "http-runner", "scale")

# What each peer's virtualenv gets from PyPI. Exact pins: a re-run measures the same code.
# psycopg[binary] is psycopg's recommended fast (C) implementation; asyncpg is only used
# by the harness' bookkeeping queries in the procrastinate venv.
PEER_REQUIREMENTS = {
    "procrastinate": ["procrastinate==3.10.0", "psycopg[binary]", "asyncpg", "uvloop"],
    "pgqueuer": ["pgqueuer[asyncpg]==1.6.0", "uvloop"],
}
# "concurrency" per system: Runner(concurrency=) for pgq, run_worker_async(concurrency=)
# for procrastinate, QueueManager.run(batch_size=) for PgQueuer (see its adapter).
# pgq sweeps the same range as PgQueuer: a claim and a completion batch hold up to
# `concurrency` jobs, and their cost is per call (a commit's WAL flush), not per job, so
# 200 drained faster than 50 on 2026-12-03 (benchmarks/README.md, "Per-job cost").
SWEEP = {"pgq": (50, 200, 1000), "procrastinate": (1, 10, 50), "pgqueuer": (50, 200, 1000)}
DEFAULT_CONCURRENCY = {"pgq": 200, "procrastinate": 10, "pgqueuer": 200}
# A measurement during which other processes used more CPU than this (in cores) is
# flagged in RESULTS.md: on a shared 2-core machine that changes the numbers.
NOISY = 0.25


@dataclass
class Config:
    dsn: str
    systems: list[str]
    scenarios: list[str]
    reps: int
    n: int
    n_sweep: int
    sweep: bool
    latency_count: int
    latency_interval: float
    steady_connections: int
    steady_seconds: float
    settle: float
    http_connections: int
    http_seconds: float
    smoke: bool
    results_path: Path
    scale_sizes: list[int] = field(default_factory=list)
    concurrency: dict[str, int] = field(default_factory=dict)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- environments


def ensure_venv(system: str) -> Path:
    """Create (or reuse) benchmarks/.venvs/<system> with the pinned requirements."""
    venv = VENVS / system
    python = venv / "bin" / "python"
    spec = "\n".join(PEER_REQUIREMENTS[system])
    marker = venv / "bench-requirements.txt"
    if python.exists() and marker.exists() and marker.read_text() == spec:
        return python
    log(f"creating {venv} ({', '.join(PEER_REQUIREMENTS[system])})")
    OUT.mkdir(parents=True, exist_ok=True)
    pip_log = OUT / f"pip-{system}.log"
    with open(pip_log, "w") as f:
        for cmd in (
            [sys.executable, "-m", "venv", "--clear", str(venv)],
            [str(python), "-m", "pip", "install", "--disable-pip-version-check"]
            + PEER_REQUIREMENTS[system],
        ):
            if subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT).returncode:
                sys.exit(f"failed: {shlex.join(cmd)} (see {pip_log})")
    marker.write_text(spec)
    return python


def interpreter(system: str) -> tuple[str, dict[str, str]]:
    env = dict(os.environ)
    if system == "pgq":
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        return sys.executable, env
    return str(ensure_venv(system)), env


# --------------------------------------------------------------------------- database


def dsn_for(base: str, database: str) -> str:
    return f"{base.rstrip('/')}/{database}"


@contextlib.asynccontextmanager
async def fresh_db(cfg: Config, system: str):
    # per invocation: two benchmark runs on one server must not drop each other's database
    name = f"bench_{system}_{os.getpid()}"
    admin = await asyncpg.connect(dsn_for(cfg.dsn, "postgres"))
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.execute(f"CREATE DATABASE {name}")
        try:
            yield dsn_for(cfg.dsn, name), admin
        finally:
            await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await admin.close()


class ForeignLoad:
    """Samples how much CPU processes outside this benchmark use (other people's tests on
    a shared machine): everything but this process tree and the benchmark server's own
    processes (its auxiliary processes and the backends serving bench_* databases).
    Reported per measurement, in cores."""

    def __init__(self, dsn: str, every: float = 0.5) -> None:
        self.dsn, self.every = dsn, every
        self.samples: list[float] = []
        self.budget = 300.0
        self._task: asyncio.Task | None = None
        self._tick = os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _stat() -> dict[int, tuple[int, str, int]]:
        """pid -> (ppid, comm, utime + stime ticks)."""
        out = {}
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/stat") as f:
                    raw = f.read()
            except OSError:
                continue
            comm = raw[raw.index("(") + 1 : raw.rindex(")")]
            fields = raw[raw.rindex(")") + 2 :].split()
            out[int(entry.name)] = (int(fields[1]), comm, int(fields[11]) + int(fields[12]))
        return out

    def _ours(self, stat: dict) -> set[int]:
        ours, me = set(), os.getpid()
        for pid in stat:
            p = pid
            while p > 1 and p in stat:
                if p == me:
                    ours.add(pid)
                    break
                p = stat[p][0]
        return ours

    async def _run(self) -> None:
        conn = await asyncpg.connect(dsn_for(self.dsn, "postgres"))
        try:
            # Our server's processes are the postmaster's children (another Postgres on
            # the machine, e.g. a test suite's embedded one, counts as foreign).
            try:
                datadir = await conn.fetchval("SHOW data_directory")
                postmaster = int(Path(datadir, "postmaster.pid").read_text().split()[0])  # noqa: ASYNC240
            except (OSError, ValueError, asyncpg.PostgresError):
                postmaster = None
            prev, t_prev = self._stat(), time.monotonic()
            while True:
                await asyncio.sleep(self.every)
                foreign_pg = {
                    r[0]
                    for r in await conn.fetch(
                        "SELECT pid FROM pg_stat_activity WHERE datname IS NOT NULL "
                        "AND datname NOT LIKE 'bench\\_%' AND pid <> pg_backend_pid()"
                    )
                }
                cur, t = self._stat(), time.monotonic()
                ours = self._ours(cur)
                ticks = 0
                for pid, (ppid, comm, cpu) in cur.items():
                    ours_pg = (
                        ppid == postmaster or pid == postmaster
                        if postmaster
                        else (comm == "postgres")
                    )
                    if pid in ours or (ours_pg and pid not in foreign_pg):
                        continue
                    ticks += cpu - prev.get(pid, (0, "", cpu))[2]
                self.samples.append(ticks / self._tick / (t - t_prev))
                prev, t_prev = cur, t
        finally:
            await conn.close()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    def take(self) -> list[float]:
        samples, self.samples = self.samples, []
        return samples

    async def wait_quiet(self, limit: float = 0.3, patience: float = 60) -> None:
        """Wait (at most `patience` s, and at most 5 minutes per invocation in all) until
        other processes use under `limit` cores."""
        t0 = time.monotonic()
        deadline = t0 + min(patience, self.budget)
        self.take()
        await asyncio.sleep(2 * self.every + 0.1)
        while max(self.take()[-2:], default=0) > limit and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(2 * self.every)
        self.take()
        self.budget -= max(0.0, time.monotonic() - t0 - 2 * self.every - 0.1)


# --------------------------------------------------------------------------- adapters


class AdapterError(RuntimeError):
    pass


class Adapter:
    """One adapter subprocess; the last stdout line of each command is its JSON result."""

    def __init__(self, system: str, args: list[str], logfile: Path) -> None:
        self.system, self.args, self.logfile = system, args, logfile
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        python, env = interpreter(self.system)
        script = HERE / "adapters" / f"{self.system}_adapter.py"
        self.logfile.parent.mkdir(parents=True, exist_ok=True)
        self._err = open(self.logfile, "wb")  # noqa: SIM115, ASYNC230 - closed in finish()
        self.proc = await asyncio.create_subprocess_exec(
            python,
            str(script),
            *self.args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=self._err,
            env=env,
        )

    async def read_json(self, timeout: float) -> dict:
        assert self.proc and self.proc.stdout
        while True:
            line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
            if not line:
                await self.finish(5)
                raise AdapterError(self._failure("exited without a result"))
            with contextlib.suppress(ValueError):
                obj = json.loads(line)
                if isinstance(obj, dict):
                    return obj

    async def send(self, line: str) -> None:
        assert self.proc and self.proc.stdin
        self.proc.stdin.write(line.encode() + b"\n")
        await self.proc.stdin.drain()

    async def finish(self, timeout: float) -> None:
        if self.proc is None:
            return
        try:
            await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
        finally:
            self._err.close()

    def _failure(self, what: str) -> str:
        tail = self.logfile.read_text(errors="replace").strip().splitlines()[-15:]
        cmd = " ".join(self.args[:1])
        return f"{self.system} {cmd} {what}; stderr ({self.logfile}):\n  " + "\n  ".join(tail)

    @classmethod
    async def run(cls, system: str, args: list[str], logfile: Path, timeout: float) -> dict:
        adapter = cls(system, args, logfile)
        await adapter.start()
        try:
            result = await adapter.read_json(timeout)
        except BaseException:
            if adapter.proc and adapter.proc.returncode is None:
                adapter.proc.kill()
            await adapter.finish(5)
            raise
        await adapter.finish(30)
        return result


# --------------------------------------------------------------------------- scenarios


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    s = sorted(values)
    k = max(0, min(len(s) - 1, -(-len(s) * p // 100) - 1))
    return s[int(k)]


class Runner:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        self.logdir = OUT / "logs" / self.stamp
        self.records: list[dict] = []  # one per measurement, valid or not
        self.best: dict[str, int] = {}
        self.foreign = ForeignLoad(cfg.dsn)

    def logfile(self, *parts: object) -> Path:
        return self.logdir / ("-".join(str(p) for p in parts) + ".log")

    def concurrency(self, system: str) -> int:
        return self.cfg.concurrency.get(system, self.best.get(system, DEFAULT_CONCURRENCY[system]))

    async def measure(self, scenario: str, system: str, rep: object, **params) -> dict:
        """Run one measurement in a fresh database; record it whatever happens."""
        record = {"scenario": scenario, "system": system, "rep": rep, **params}
        if not self.cfg.smoke:  # smoke numbers mean nothing: don't wait for a quiet machine
            await self.foreign.wait_quiet()
        t0 = time.monotonic()
        try:
            async with fresh_db(self.cfg, system) as (dsn, admin):
                fn = getattr(self, "_" + scenario.replace("-", "_"))
                record.update(await fn(system, dsn, admin, rep, **params))
        except Exception as exc:
            record.update(ok=False, problems=[f"{type(exc).__name__}: {exc}"])
        record["wall_s"] = round(time.monotonic() - t0, 2)
        load = self.foreign.take()
        record["foreign_cores"] = round(statistics.fmean(load), 2) if load else 0.0
        if record["foreign_cores"] > NOISY:
            log(f"other processes used {record['foreign_cores']} cores during this run")
        self.records.append(record)
        summary = {k: record.get(k) for k in SUMMARY_KEYS.get(scenario, ()) if k in record}
        status = "ok" if record.get("ok") else "INVALID " + "; ".join(record.get("problems", []))
        log(f"{scenario:8} {system:13} rep={rep} {params or ''} {fmt_summary(summary)} {status}")
        return record

    async def _enqueue(self, system, dsn, admin, rep) -> dict:
        n = self.cfg.n
        lf = self.logfile("enqueue", system, rep)
        out = await Adapter.run(system, ["enqueue", dsn, str(n), "--install"], lf, 300)
        if system == "pgq" and out.get("ok"):
            # the physical limit, measured in the same database right after
            out["copy_jobs_per_s"] = n / await copy_limit(dsn, n)
            out["of_copy_limit"] = out["jobs_per_s"] / out["copy_jobs_per_s"]
        return out

    async def _drain(self, system, dsn, admin, rep, concurrency, n) -> dict:
        lf = self.logfile("drain", system, rep, concurrency)
        enq = await Adapter.run(system, ["enqueue", dsn, str(n), "--install"], lf, 300)
        if not enq.get("ok"):
            return {"ok": False, "problems": [f"enqueue failed: {enq}"]}
        await admin.execute("CHECKPOINT")
        args = ["drain", dsn, str(n), "--concurrency", str(concurrency)]
        return await Adapter.run(
            system, args, self.logfile("drain", system, rep, concurrency, "runner"), 600
        )

    async def _scale(self, system, dsn, admin, rep, size) -> dict:
        """benchmarks/scale.py for one table size, in this measurement's fresh database."""
        repeat = "3" if self.cfg.smoke else "20"
        cmd = [sys.executable, "-m", "benchmarks.scale", "--sizes", str(size)]
        cmd += ["--repeat", repeat, "--in-database", dsn]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        lf = self.logfile("scale", size)
        lf.parent.mkdir(parents=True, exist_ok=True)
        with lf.open("w") as log_file:
            proc = await asyncio.create_subprocess_exec(
                *cmd, cwd=REPO, env=env, stdout=asyncio.subprocess.PIPE, stderr=log_file
            )
            out, _ = await asyncio.wait_for(proc.communicate(), 3600)
        lines = out.decode().strip().splitlines()
        if proc.returncode != 0 or not lines:
            return {"ok": False, "problems": [f"benchmarks.scale exited {proc.returncode}: {lf}"]}
        result = json.loads(lines[-1])
        return {"ok": not result["problems"], "problems": result["problems"], "scale": result}

    async def _sweep(self, system, dsn, admin, rep, concurrency, n) -> dict:
        return await self._drain(system, dsn, admin, f"sweep{rep}", concurrency, n)

    async def _worker_scenario(self, system, dsn, rep, name, producer_args):
        """An idle runner, then a producer process; returns (worker, producer, starts)."""
        starts_file = self.logdir / f"{name}-{system}-{rep}-starts.json"
        worker = Adapter(
            system,
            [
                "worker",
                dsn,
                "--concurrency",
                str(self.concurrency(system)),
                "--out",
                str(starts_file),
                "--install",
                "--settle",
                str(self.cfg.settle),
            ],
            self.logfile(name, system, rep, "runner"),
        )
        await worker.start()
        try:
            ready = await worker.read_json(120)
            if not ready.get("ready"):
                raise AdapterError(f"runner not ready: {ready}")
            prod = await Adapter.run(
                system, producer_args, self.logfile(name, system, rep, "producer"), 600
            )
            await worker.send(f"expect {prod['enqueued']}")
            result = await worker.read_json(900)
        except BaseException:
            if worker.proc and worker.proc.returncode is None:
                worker.proc.kill()
            await worker.finish(5)
            raise
        await worker.finish(30)
        starts = {int(k): v for k, v in json.loads(starts_file.read_text()).items()}
        return result, prod, starts

    async def _latency(self, system, dsn, admin, rep) -> dict:
        args = [
            "produce-latency",
            dsn,
            "--count",
            str(self.cfg.latency_count),
            "--interval",
            str(self.cfg.latency_interval),
        ]
        result, prod, starts = await self._worker_scenario(system, dsn, rep, "latency", args)
        commits = {int(k): v for k, v in prod["commits"].items()}
        lat = [(starts[i] - commits[i]) * 1000 for i in commits if i in starts]
        out = {
            "ok": result.get("ok") and len(lat) == len(commits),
            "concurrency": self.concurrency(system),
        }
        out["problems"] = result.get("problems", [])
        if lat:
            out.update(
                p50_ms=percentile(lat, 50),
                p95_ms=percentile(lat, 95),
                p99_ms=percentile(lat, 99),
                max_ms=max(lat),
                samples=len(lat),
            )
        return out

    async def _steady(self, system, dsn, admin, rep) -> dict:
        args = [
            "produce-steady",
            dsn,
            "--connections",
            str(self.cfg.steady_connections),
            "--seconds",
            str(self.cfg.steady_seconds),
        ]
        result, prod, starts = await self._worker_scenario(system, dsn, rep, "steady", args)
        t0, t1 = prod["t0"], prod["t1"]
        window = t1 - t0
        started_by_end = sum(1 for t in starts.values() if t <= t1)
        in_window = sum(1 for t in starts.values() if t0 <= t <= t1)
        out = {
            "ok": result.get("ok"),
            "problems": result.get("problems", []),
            "concurrency": self.concurrency(system),
            "enqueued": prod["enqueued"],
            "enqueued_per_s": prod["enqueued"] / window,
            "consumed_per_s": in_window / window,
            "backlog": prod["enqueued"] - started_by_end,
        }
        if system == "pgq" and out["ok"]:
            # the limits, measured in the same database right after
            out["commit_limit_per_s"] = await commit_limit(
                dsn, self.cfg.steady_connections, self.cfg.steady_seconds
            )
            out["of_commit_limit"] = out["enqueued_per_s"] / out["commit_limit_per_s"]
            await admin_fetch(dsn, "TRUNCATE pgq.jobs")  # the bare run is verified alone
            bare, bare_prod, _ = await self._worker_scenario(
                system, dsn, rep, "steady-bare", [*args, "--bare"]
            )
            if bare.get("ok"):
                out["bare_insert_per_s"] = bare_prod["enqueued"] / (
                    bare_prod["t1"] - bare_prod["t0"]
                )
                out["of_bare_insert"] = out["enqueued_per_s"] / out["bare_insert_per_s"]
            else:
                out["ok"] = False
                out["problems"] += [f"bare producers: {p}" for p in bare.get("problems", [])]
        return out

    async def _http(self, system, dsn, admin, rep) -> dict:
        """pgq's coordinator under a closed-loop load generator, beside a bare aiohttp
        JSON endpoint (the ceiling) driven by the same generator."""
        cfg = self.cfg
        load = [str(HERE / "http_load.py")]
        opts = ["--connections", str(cfg.http_connections), "--seconds", str(cfg.http_seconds)]
        out: dict = {"problems": []}

        port = free_port()
        async with Server([*load, "ceiling", str(port)], self.logfile("http-ceiling", rep)) as url:
            await wait_healthy(url)
            ceiling = await load_gen([*load, "post", url, *opts])
        out.update(ceiling_rps=ceiling["requests_per_s"], ceiling_p99_ms=ceiling["p99_ms"])

        # Install pgq and queue jobs for the claim/complete phase, through the adapter.
        lf = self.logfile("http", system, rep, "enqueue")
        await Adapter.run(system, ["enqueue", dsn, str(cfg.n), "--install"], lf, 300)
        async with coordinator(dsn, self.logfile("http", system, rep, "coordinator")) as url:
            post = await load_gen([*load, "post", url, *opts])
            claim = await load_gen([*load, "claim-complete", url, *opts])
        out.update(
            post_rps=post["requests_per_s"],
            post_p99_ms=post["p99_ms"],
            claim_complete_rps=claim["requests_per_s"],
            claim_complete_jobs_per_s=claim["jobs_per_s"],
            claim_complete_p99_ms=claim["p99_ms"],
        )
        for name, r in (("ceiling", ceiling), ("POST /jobs", post), ("claim/complete", claim)):
            if set(r["statuses"]) - {"200", "201"}:
                out["problems"].append(f"{name}: HTTP statuses {r['statuses']}")
        total = await admin_count(dsn, "SELECT count(*) FROM pgq.jobs")
        if total != cfg.n + post["created_total"]:
            out["problems"].append(
                f"{total} jobs in pgq.jobs, expected {cfg.n} + {post['created_total']} posted"
            )
        statuses = dict(
            await admin_fetch(dsn, "SELECT status::text, count(*) FROM pgq.jobs GROUP BY 1")
        )
        twice = await admin_count(dsn, "SELECT count(*) FROM pgq.jobs WHERE attempts > 1")
        if statuses.get("succeeded", 0) != claim["completed"] or statuses.get("running") or twice:
            out["problems"].append(
                f"statuses {statuses}, {twice} claimed twice; {claim['completed']} completed"
            )
        out["ok"] = not out["problems"]
        return out

    async def _http_runner(self, system, dsn, admin, rep, mode, concurrency, n) -> dict:
        """The drain through one coordinator process by one HTTP-mode runner process
        (``pgq runner --coordinator``), or, for the ratio, by a database-mode runner;
        verified like the drain. The coordinator's request counts show how many jobs
        each claim and each completion request carried."""
        lf = self.logfile("http-runner", mode, rep)
        enq = await Adapter.run(system, ["enqueue", dsn, str(n), "--install"], lf, 300)
        if not enq.get("ok"):
            return {"ok": False, "problems": [f"enqueue failed: {enq}"]}
        await admin.execute("CHECKPOINT")
        args = ["drain", dsn, str(n), "--concurrency", str(concurrency)]
        runner_log = self.logfile("http-runner", mode, rep, "runner")
        if mode == "database":
            return await Adapter.run(system, args, runner_log, 600)
        async with coordinator(dsn, self.logfile("http-runner", mode, rep, "coordinator")) as url:
            before = await request_counts(url)
            result = await Adapter.run(system, [*args, "--coordinator", url], runner_log, 600)
            after = await request_counts(url)
        for route in ("/jobs/claim", "/jobs/complete"):
            made = after.get(route, 0) - before.get(route, 0)
            result[f"{route.rsplit('/', 1)[1]}_requests"] = made
            if made:
                result[f"jobs_per_{route.rsplit('/', 1)[1]}"] = n / made
        return result

    # ------------------------------------------------------------------ plan

    async def run(self) -> None:
        cfg = self.cfg
        for system in cfg.systems:
            interpreter(system)  # create peer venvs up front, outside any timing
        self.foreign.start()
        for scenario in SCENARIOS:
            if scenario not in cfg.scenarios:
                continue
            systems = [s for s in cfg.systems if scenario not in ONLY_PGQ or s == "pgq"]
            if scenario == "drain" and cfg.sweep:
                await self.sweep(systems)
            if scenario == "scale":  # pgq alone, one measurement per size (it has its own repeats)
                if "pgq" in systems:
                    for size in cfg.scale_sizes:
                        await self.measure(scenario, "pgq", 0, size=size)
                continue
            for rep in range(cfg.reps):
                if scenario == "http-runner":
                    n = cfg.n
                    if "pgq" in systems:
                        c = self.concurrency("pgq")
                        for mode in rotate(["http", "database"], rep):
                            await self.measure(scenario, "pgq", rep, mode=mode, concurrency=c, n=n)
                    continue
                for system in rotate(systems, rep):
                    if scenario == "drain":
                        c = self.concurrency(system)
                        await self.measure("drain", system, rep, concurrency=c, n=cfg.n)
                    else:
                        await self.measure(scenario, system, rep)

    async def sweep(self, systems: list[str]) -> None:
        """One drain of n_sweep jobs per concurrency setting; keep the fastest."""
        todo = [s for s in systems if s not in self.cfg.concurrency]
        for i in range(max((len(SWEEP[s]) for s in todo), default=0)):
            for system in rotate(todo, i):
                if i < len(SWEEP[system]):
                    c = SWEEP[system][i]
                    await self.measure("sweep", system, c, concurrency=c, n=self.cfg.n_sweep)
        for system in todo:
            runs = [
                r
                for r in self.records
                if r["scenario"] == "sweep" and r["system"] == system and r.get("ok")
            ]
            if runs:
                self.best[system] = max(runs, key=lambda r: r["jobs_per_s"])["concurrency"]
                log(f"drain sweep: {system} is fastest at concurrency {self.best[system]}")


SUMMARY_KEYS = {
    "enqueue": ("jobs_per_s", "copy_jobs_per_s"),
    "drain": ("jobs_per_s", "elapsed_s"),
    "sweep": ("jobs_per_s",),
    "latency": ("p50_ms", "p99_ms", "max_ms"),
    "steady": (
        "enqueued_per_s",
        "consumed_per_s",
        "backlog",
        "commit_limit_per_s",
        "bare_insert_per_s",
    ),
    "http": ("ceiling_rps", "post_rps", "claim_complete_rps", "claim_complete_p99_ms"),
    "http-runner": ("jobs_per_s", "jobs_per_claim", "jobs_per_complete"),
    "scale": (),
}


def fmt_summary(d: dict) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in d.items())


def rotate(items: list, k: int) -> list:
    k %= max(1, len(items))
    return items[k:] + items[:k]


# --------------------------------------------------------------------------- HTTP helpers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A server subprocess (this interpreter, working tree on PYTHONPATH) for a block."""

    def __init__(self, args: list[str], logfile: Path, env: dict[str, str] | None = None):
        self.args, self.logfile, self.env = args, logfile, env or {}

    async def __aenter__(self) -> str:
        _, env = interpreter("pgq")
        env.update(self.env)
        self.logfile.parent.mkdir(parents=True, exist_ok=True)
        self._err = open(self.logfile, "wb")  # noqa: SIM115, ASYNC230 - closed in __aexit__
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, *self.args, stdout=self._err, stderr=self._err, env=env
        )
        port = self.env.get("PGQ_PORT") or self.args[-1]
        return f"http://127.0.0.1:{port}"

    async def __aexit__(self, *exc) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 30)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        self._err.close()


@contextlib.asynccontextmanager
async def coordinator(dsn: str, logfile: Path):
    """A ``pgq coordinator`` process on ``dsn`` (logs at warning), healthy; yields its URL."""
    env = {"PGQ_DATABASE_URL": dsn, "PGQ_HOST": "127.0.0.1", "PGQ_LOG_LEVEL": "warning"}
    env["PGQ_PORT"] = str(free_port())
    cli = ["-c", "import sys; from pgq.cli import main; sys.exit(main())", "coordinator"]
    async with Server(cli, logfile, env) as url:
        await wait_healthy(url)
        yield url


async def wait_healthy(url: str, timeout: float = 30) -> None:
    import aiohttp

    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.get(url + "/health") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise AdapterError(f"{url}/health not 200 after {timeout} s")
            await asyncio.sleep(0.1)


async def request_counts(url: str) -> dict[str, float]:
    """The coordinator's ``pgq_http_requests_total`` by route (all methods and statuses)."""
    import aiohttp

    async with aiohttp.ClientSession() as session, session.get(url + "/metrics") as resp:
        text = await resp.text()
    counts: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("pgq_http_requests_total{"):
            labels, _, value = line.rpartition(" ")
            route = labels.partition('route="')[2].partition('"')[0]
            counts[route] = counts.get(route, 0) + float(value)
    return counts


async def load_gen(args: list[str]) -> dict:
    _, env = interpreter("pgq")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    stdout, stderr = await proc.communicate()
    if proc.returncode:
        raise AdapterError(f"load generator failed: {stderr.decode(errors='replace')[-2000:]}")
    return json.loads(stdout.decode().strip().splitlines()[-1])


async def copy_limit(dsn: str, n: int) -> float:
    """Seconds to bulk-load n jobs the cheapest way Postgres can: one binary COPY of
    (type, args) rows, committed, into an empty twin of ``pgq.jobs`` with the same columns,
    defaults and indexes, but no triggers, no CHECK constraints and no validation. What
    pgq's bulk enqueue is compared with (the rows are built before the clock starts)."""
    records = [("NOOP", f'{{"i": {i}}}') for i in range(n)]
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "CREATE TABLE pgq.jobs_copy_limit "
            "(LIKE pgq.jobs INCLUDING DEFAULTS INCLUDING IDENTITY INCLUDING INDEXES)"
        )
        t0 = time.monotonic()
        async with conn.transaction():
            await conn.copy_records_to_table(
                "jobs_copy_limit", schema_name="pgq", columns=["type", "args"], records=records
            )
        seconds = time.monotonic() - t0
        await conn.execute("DROP TABLE pgq.jobs_copy_limit")
        return seconds
    finally:
        await conn.close()


async def commit_limit(dsn: str, connections: int, seconds: float) -> float:
    """Rows per second that ``connections`` producers, each committing one plain INSERT at
    a time, get into an empty twin of ``pgq.jobs`` (same columns, defaults and indexes; no
    triggers, CHECKs or validation) for ``seconds``, with nothing consuming: what the
    steady scenario's producers are compared with. Each such transaction waits for its
    commit's WAL flush, so this is the server's group-commit rate more than any queue's."""
    conns = [await asyncpg.connect(dsn) for _ in range(connections)]
    try:
        await conns[0].execute(
            "CREATE TABLE pgq.jobs_commit_limit "
            "(LIKE pgq.jobs INCLUDING DEFAULTS INCLUDING IDENTITY INCLUDING INDEXES)"
        )
        insert = "INSERT INTO pgq.jobs_commit_limit (type, args) VALUES ('NOOP', $1::jsonb)"
        counter = itertools.count()
        deadline = time.monotonic() + seconds

        async def produce(conn: asyncpg.Connection) -> int:
            done = 0
            while time.monotonic() < deadline:
                await conn.execute(insert, f'{{"i": {next(counter)}}}')
                done += 1
            return done

        t0 = time.monotonic()
        inserted = sum(await asyncio.gather(*(produce(c) for c in conns)))
        rate = inserted / (time.monotonic() - t0)
        await conns[0].execute("DROP TABLE pgq.jobs_commit_limit")
        return rate
    finally:
        for conn in conns:
            await conn.close()


async def admin_fetch(dsn: str, sql: str) -> list:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch(sql)
    finally:
        await conn.close()


async def admin_count(dsn: str, sql: str) -> int:
    return (await admin_fetch(dsn, sql))[0][0]


# --------------------------------------------------------------------------- report

# (scenario, metric, label, higher is better)
METRICS = [
    ("enqueue", "jobs_per_s", "bulk enqueue, jobs/s", True),
    ("enqueue", "copy_jobs_per_s", "bulk enqueue's limit: binary COPY, jobs/s", True),
    ("enqueue", "of_copy_limit", "bulk enqueue / that limit", True),
    ("drain", "jobs_per_s", "drain, jobs/s", True),
    ("drain", "elapsed_s", "drain, seconds", False),
    ("latency", "p50_ms", "wake-up p50, ms", False),
    ("latency", "p95_ms", "wake-up p95, ms", False),
    ("latency", "p99_ms", "wake-up p99, ms", False),
    ("latency", "max_ms", "wake-up max, ms", False),
    ("steady", "enqueued_per_s", "steady: enqueued/s (4 producers)", True),
    ("steady", "consumed_per_s", "steady: consumed/s", True),
    ("steady", "commit_limit_per_s", "steady's limit: plain one-row INSERT commits/s", True),
    ("steady", "of_commit_limit", "steady enqueued / that limit", True),
    (
        "steady",
        "bare_insert_per_s",
        "steady's limit with the runner consuming: plain INSERTs into pgq.jobs/s",
        True,
    ),
    ("steady", "of_bare_insert", "steady enqueued / that limit", True),
    ("steady", "backlog", "steady: backlog at the end", False),
]


def fmt(v: float) -> str:
    if float(v).is_integer() and abs(v) < 1000:
        return f"{v:.0f}"
    if v >= 1000:
        return f"{v:,.0f}"
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def cell(values: list[float]) -> str:
    if not values:
        return "–"
    med = statistics.median(values)
    if len(values) == 1:
        return fmt(med)
    return f"{fmt(med)} ({fmt(min(values))}–{fmt(max(values))})"


def sh(cmd: str) -> str:
    try:
        return subprocess.run(
            cmd, shell=True, capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except Exception:
        return "?"


async def machine(cfg: Config) -> dict:
    mem = sh("awk '/MemTotal/ {printf \"%.1f GiB\", $2/1048576}' /proc/meminfo")
    cpu = sh("awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo")
    conn = await asyncpg.connect(dsn_for(cfg.dsn, "postgres"))
    try:
        pg = await conn.fetchval("SELECT version()")
        settings = {
            k: await conn.fetchval(f"SHOW {k}")
            for k in ("shared_buffers", "synchronous_commit", "fsync", "max_connections")
        }
    finally:
        await conn.close()
    return {
        "nproc": sh("nproc"),
        "cpu": cpu,
        "memory": mem,
        "postgres": pg,
        "postgres_settings": settings,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "git": sh(f"git -C {shlex.quote(str(REPO))} rev-parse --short HEAD"),
    }


def report(cfg: Config, runner: Runner, info: dict, argv: list[str]) -> str:
    recs = runner.records
    versions = {}
    for r in recs:
        if r.get("version"):
            versions[r["system"]] = r["version"]
    systems = cfg.systems
    peers = [s for s in systems if s != "pgq"]
    noisy = [r for r in recs if r.get("foreign_cores", 0) > NOISY]
    lines = [
        "# pgq benchmarks"
        + (" (smoke run: tiny sizes, numbers mean nothing)" if cfg.smoke else ""),
        "",
        f"Generated {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')} by "
        f"`{shlex.join(['python', '-m', 'benchmarks.run', *argv])}` (git {info['git']}).",
        "",
        *(
            [
                f"**Warning: {len(noisy)} of {len(recs)} measurements ran while other processes "
                f"used more than {NOISY} cores (see Interference); treat these numbers as "
                "rough.**",
                "",
            ]
            if len(noisy) * 4 > len(recs)
            else []
        ),
        "## Machine",
        "",
        f"- `nproc`: {info['nproc']} ({info['cpu']}), memory {info['memory']}, "
        f"kernel {info['kernel']}",
        f"- {info['postgres']}",
        "- Postgres settings: "
        + ", ".join(f"{k}={v}" for k, v in info["postgres_settings"].items()),
        f"- Python {info['python']}; uvloop in every process",
        "- Systems: " + ", ".join(f"{s} {versions.get(s, '?')}" for s in systems),
        "",
        "## Results",
        "",
        f"Median of {cfg.reps} interleaved repetition(s), (min–max) when more than one; "
        f"N = {cfg.n:,} jobs for drain and bulk enqueue. Ratio = pgq / peer on medians "
        "(▲ higher is better, ▼ lower is better). Only runs that passed the correctness "
        "checks count.",
        "",
    ]
    header = ["metric", *systems] + [f"pgq / {p}" for p in peers if "pgq" in systems]
    table = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for scenario, metric, label, higher in METRICS:
        if scenario not in cfg.scenarios:
            continue
        vals = {
            s: [
                r[metric]
                for r in recs
                if r["scenario"] == scenario and r["system"] == s and r.get("ok") and metric in r
            ]
            for s in systems
        }
        if not any(vals.values()):
            continue
        row = [label + (" ▲" if higher else " ▼")] + [cell(vals[s]) for s in systems]
        if "pgq" in systems:
            for p in peers:
                if vals["pgq"] and vals[p] and statistics.median(vals[p]):
                    row.append(f"{statistics.median(vals['pgq']) / statistics.median(vals[p]):.2f}")
                else:
                    row.append("–")
        table.append("| " + " | ".join(row) + " |")
    if len(table) > 2:  # only pgq-only scenarios ran: no comparison table
        lines += table
    http = [r for r in recs if r["scenario"] == "http" and r.get("ok")]
    if http:

        def col(key: str) -> str:
            return cell([r[key] for r in http])

        def vs(key: str) -> str:
            ceiling = statistics.median(r["ceiling_rps"] for r in http)
            return f"{statistics.median(r[key] for r in http) / ceiling:.2f}"

        lines += [
            "",
            f"### HTTP ({cfg.http_connections} concurrent clients, {cfg.http_seconds:g} s each, "
            "one Python load-generator process on the same machine)",
            "",
            "| endpoint | requests/s ▲ | p99 ms ▼ | requests/s vs ceiling |",
            "|---|---|---|---|",
            f"| bare aiohttp JSON endpoint (ceiling) | {col('ceiling_rps')} "
            f"| {col('ceiling_p99_ms')} | 1.00 |",
            f"| pgq `POST /jobs` | {col('post_rps')} | {col('post_p99_ms')} | {vs('post_rps')} |",
            f"| pgq `POST /jobs/claim` + `POST /jobs/{{id}}/complete` "
            f"({col('claim_complete_jobs_per_s')} jobs/s) | {col('claim_complete_rps')} "
            f"| {col('claim_complete_p99_ms')} | {vs('claim_complete_rps')} |",
        ]
    lines += http_runner_table(cfg, recs)
    lines += scale_table(recs)
    conc = {s: runner.concurrency(s) for s in systems}
    lines += [
        "",
        "Concurrency used for drain, latency and steady state: "
        + ", ".join(f"{s} {c}" for s, c in conc.items())
        + " (`Runner(concurrency=)` for pgq, `run_worker_async(concurrency=)` for procrastinate, "
        "`QueueManager.run(batch_size=)` for PgQueuer).",
    ]
    sweep = [r for r in recs if r["scenario"] == "sweep"]
    if sweep:
        lines += ["", f"### Drain sweep ({cfg.n_sweep:,} jobs, one run per setting)", ""]
        lines += ["| system | concurrency | jobs/s |", "|---|---|---|"]
        for r in sorted(sweep, key=lambda r: (r["system"], r["concurrency"])):
            v = fmt(r["jobs_per_s"]) if r.get("ok") else "invalid"
            lines.append(f"| {r['system']} | {r['concurrency']} | {v} |")
    lines += ["", "### Interference", ""]
    worst = max((r.get("foreign_cores", 0) for r in recs), default=0)
    lines.append(
        f"Other processes on the machine used at most {worst:.2f} cores on average during "
        f"any measurement; {len(noisy)} of {len(recs)} measurements were above {NOISY} cores"
        + (
            ": "
            + ", ".join(
                f"{r['scenario']} {r['system']}{' ' + r['mode'] if 'mode' in r else ''} "
                f"rep {r['rep']} ({r['foreign_cores']})"
                for r in noisy
            )
            if noisy
            else "."
        )
    )
    bad = [r for r in recs if not r.get("ok")]
    lines += ["", "### Runs that did not count", ""]
    if bad:
        for r in bad:
            problems = "; ".join(r.get("problems", [])).replace("\n", " ")[:400]
            lines.append(f"- {r['scenario']} {r['system']} rep {r['rep']}: {problems}")
    else:
        lines.append("None: every run verified all jobs succeeded exactly once.")
    lines += ["", METHOD.format(nproc=info["nproc"], **vars(cfg)).strip(), ""]
    return "\n".join(lines)


def scale_table(recs: list[dict]) -> list[str]:
    """What a claim, pgq.stats(), a job list and a metrics scrape cost per table size."""
    runs = [r["scale"] for r in recs if r["scenario"] == "scale" and r.get("ok")]
    if not runs:
        return []
    return [
        "",
        "### Scale: cost per call as the table grows (pgq alone, `benchmarks/scale.py`)",
        "",
        "Milliseconds, median (90th percentile). `fresh`: the jobs just loaded by one INSERT, "
        "all queued, never analyzed; `mass update`: all but 10,000 then turned "
        "succeeded/dead by one UPDATE, still not vacuumed or analyzed; `analyzed`: after "
        "`VACUUM ANALYZE`. claim = `pgq.claim(w, 10)` committed (no commit: the same call in a "
        "transaction rolled back, i.e. without the commit's WAL flush); list = first page of "
        "`status=dead` (and of `queue=mail&status=dead`); metrics = the database side of "
        "`GET /metrics`.",
        "",
        *scale_markdown(sorted(runs, key=lambda r: r["size"])),
    ]


def scale_markdown(results: list[dict]) -> list[str]:
    """The table benchmarks/scale.py's ``markdown`` renders (kept here so run.py stays
    runnable as a script without the benchmarks package on the path)."""
    measures = ("claim (no commit)", "claim", "stats", "list dead", "list queue+dead", "metrics")
    lines = [
        "| jobs | state | " + " | ".join(measures) + " |",
        "|---|---|" + "---|" * len(measures),
    ]
    for r in results:
        for state in ("fresh", "mass update", "analyzed"):
            if state in r:
                cells = [
                    f"{r[state][m]['p50']:.2f} ({r[state][m]['p90']:.2f})" if m in r[state] else "–"
                    for m in measures
                ]
                lines.append(f"| {r['size']:,} | {state} | " + " | ".join(cells) + " |")
    return lines


def http_runner_table(cfg: Config, recs: list[dict]) -> list[str]:
    """The HTTP-mode runner beside a database-mode runner on the same N (``http-runner``)."""
    runs = [r for r in recs if r["scenario"] == "http-runner" and r.get("ok")]
    if not runs:
        return []
    http = [r for r in runs if r["mode"] == "http"]
    database = [r for r in runs if r["mode"] == "database"]

    def col(rows: list[dict], key: str) -> str:
        return cell([r[key] for r in rows if key in r])

    ratio = "–"
    if http and database:
        median_db = statistics.median(r["jobs_per_s"] for r in database)
        ratio = f"{statistics.median(r['jobs_per_s'] for r in http) / median_db:.2f}"
    concurrency = runs[0]["concurrency"]
    return [
        "",
        f"### HTTP-mode runner ({cfg.n:,} jobs, concurrency {concurrency}; one coordinator "
        "process, one runner process)",
        "",
        "| runner | jobs/s ▲ | jobs per claim request ▲ | jobs per complete request ▲ |",
        "|---|---|---|---|",
        f"| `pgq runner --coordinator URL` (HTTP) | {col(http, 'jobs_per_s')} "
        f"| {col(http, 'jobs_per_claim')} | {col(http, 'jobs_per_complete')} |",
        f"| `pgq runner` (database), same N, same repetitions | {col(database, 'jobs_per_s')} "
        "| – | – |",
        "",
        f"HTTP / database: {ratio} (medians).",
    ]


METHOD = """
## Method

- **Isolation.** Every measurement creates a fresh database (`bench_<system>`), installs
  the system's schema with its own installer, and drops the database `WITH (FORCE)` at the end.
  Repetitions are interleaved: each repetition runs every system once, in rotating order.
- **Bulk enqueue.** The fastest documented path, one call for all N jobs:
  `client.enqueue_many` (pgq), `Task.batch_defer_async` (procrastinate),
  `Queries.enqueue` with lists (PgQueuer). Timed around that call only. pgq's physical
  limit, measured right after in the same database: one binary `COPY` of the same N
  (type, args) rows, committed, into an empty twin of `pgq.jobs` (same columns, defaults
  and indexes; no triggers, CHECKs or validation), built before the clock starts.
- **Drain.** N no-op jobs enqueued by one process, a `CHECKPOINT`, then a fresh runner process:
  time from creating the runner until the database reports all N jobs done
  (polled every 5 ms once the handlers have all started). A short sweep over a few
  concurrency settings picks each system's fastest first.
- **Wake-up latency.** An idle runner (started {settle} s before the producer), then
  {latency_count} single enqueues {latency_interval} s apart, each its own transaction. Latency =
  handler start − the producer's `time.monotonic()` right after the enqueue call returned
  (commit acknowledged); both processes read CLOCK_MONOTONIC on the same machine.
- **Steady state.** {steady_connections} producer connections in one process, each
  enqueueing one job per transaction with the system's single-enqueue API for
  {steady_seconds} s, while the runner consumes. consumed/s counts handler starts inside the
  production window; backlog = enqueued − started by the end of the window. The runner then
  finishes the backlog so the run can be verified. pgq's limit, measured right after in the
  same database with the runner stopped: the same producer connections committing one plain
  `INSERT` of a (type, args) row each for the same time into an empty twin of `pgq.jobs`
  (same columns, defaults and indexes; no triggers, CHECKs or validation). And its limit
  with the consumer: a fresh runner again, the same producer connections each committing one
  plain `INSERT INTO pgq.jobs (type, args)` on a bare asyncpg connection (no `pgq.Client`,
  no `pgq.enqueue`), verified like the run itself. On a machine whose cores the producers,
  the runner and Postgres share, this is what any enqueue API could reach here.
- **HTTP-mode runner** (pgq only). N no-op jobs enqueued, a `CHECKPOINT`, one
  `pgq coordinator` process, then the drain above with its runner working through the
  coordinator (`HttpSource`, as `pgq runner --coordinator URL` does); in each repetition the
  same N are also drained by a database-mode runner (its own fresh database), for the ratio.
  Request counts come from the coordinator's `pgq_http_requests_total`.
- **Correctness.** The no-op handler records each job's index; a run counts only if the
  handlers ran exactly N times for N distinct jobs and the database agrees: pgq
  `status = 'succeeded'` and `attempts = 1` for every job; procrastinate `status = 'succeeded'`
  and one `started` event per job; PgQueuer an empty queue table and exactly one
  `successful` log row per job.
- **Fairness.** Every process uses uvloop. Each system uses its real API and its own
  driver (asyncpg for pgq and PgQueuer, psycopg 3 with the C extension for procrastinate,
  whose worker pool is sized to concurrency + 1). No system writes a log line per job:
  all three are used as libraries with Python logging left unconfigured (pgq's adapter also
  sets `PGQ_LOG_LEVEL=warning`, and so does the coordinator in the HTTP scenario). Producers,
  runner, load generator and Postgres share the same {nproc} cores.
- **Interference.** A sampler reads /proc every 0.5 s and adds up the CPU used by processes
  outside this benchmark (and by Postgres backends of other databases). Before each
  measurement the orchestrator waits up to 60 s (5 min per invocation in all) for that to
  fall under 0.3 cores; the "Interference" section lists the runs it could not protect.
"""


# --------------------------------------------------------------------------- main


def parse(argv: list[str]) -> tuple[Config, argparse.Namespace]:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--smoke", action="store_true", help="tiny sizes, 1 repetition, for CI")
    p.add_argument("--systems", default=",".join(SYSTEMS))
    p.add_argument("--scenarios", default=",".join(SCENARIOS))
    p.add_argument(
        "--dsn",
        default=os.environ.get("BENCH_DSN", "postgresql://postgres@127.0.0.1:5432"),
        help="server URL without a database name (default %(default)s)",
    )
    p.add_argument("--reps", type=int)
    p.add_argument("--n", type=int, help="jobs for drain and bulk enqueue (default 20000)")
    p.add_argument("--no-sweep", action="store_true", help="skip the drain concurrency sweep")
    p.add_argument(
        "--scale-sizes",
        help="table sizes for the scale scenario (default 10000,1000000; smoke 10000)",
    )
    p.add_argument("--concurrency", default="", help="fix settings, e.g. pgq=50,pgqueuer=200")
    p.add_argument(
        "--results",
        help="markdown output (default benchmarks/RESULTS.md; "
        "benchmarks/out/RESULTS-smoke.md with --smoke)",
    )
    a = p.parse_args(argv)
    systems = [s for s in a.systems.split(",") if s]
    scenarios = [s for s in a.scenarios.split(",") if s]
    for s in systems:
        if s not in SYSTEMS:
            p.error(f"unknown system {s!r}; choose from {', '.join(SYSTEMS)}")
    for s in scenarios:
        if s not in SCENARIOS:
            p.error(f"unknown scenario {s!r}; choose from {', '.join(SCENARIOS)}")
    smoke = a.smoke
    n = a.n or (200 if smoke else 20_000)
    cfg = Config(
        dsn=a.dsn,
        systems=systems,
        scenarios=scenarios,
        reps=a.reps or (1 if smoke else 3),
        n=n,
        n_sweep=max(1, n // 10),
        sweep=not (smoke or a.no_sweep),
        latency_count=20 if smoke else 200,
        latency_interval=0.02,
        steady_connections=4,
        steady_seconds=2.0 if smoke else 20.0,
        settle=0.5 if smoke else 1.0,
        http_connections=16,
        http_seconds=1.0 if smoke else 5.0,
        smoke=smoke,
        results_path=Path(a.results)
        if a.results
        else (OUT / "RESULTS-smoke.md" if smoke else HERE / "RESULTS.md"),
        concurrency={
            k: int(v) for k, v in (kv.split("=") for kv in a.concurrency.split(",") if kv)
        },
        scale_sizes=[
            int(x)
            for x in (a.scale_sizes or ("10000" if smoke else "10000,1000000")).split(",")
            if x
        ],
    )
    return cfg, a


async def amain(argv: list[str]) -> int:
    cfg, _ = parse(argv)
    info = await machine(cfg)
    info["nproc"] = info["nproc"] or str(os.cpu_count())
    runner = Runner(cfg)
    t0 = time.monotonic()
    await runner.run()
    text = report(cfg, runner, info, argv)
    cfg.results_path.parent.mkdir(parents=True, exist_ok=True)
    cfg.results_path.write_text(text)
    OUT.mkdir(exist_ok=True)
    raw = OUT / f"results-{runner.stamp}.json"
    raw.write_text(json.dumps({"machine": info, "records": runner.records}, indent=1, default=str))
    bad = [r for r in runner.records if not r.get("ok")]
    log(
        f"done in {time.monotonic() - t0:.0f} s: {cfg.results_path} ({raw}); "
        f"{len(runner.records) - len(bad)} valid runs, {len(bad)} invalid"
    )
    return 1 if bad else 0


def main() -> None:
    sys.exit(asyncio.run(amain(sys.argv[1:])))


if __name__ == "__main__":
    main()
