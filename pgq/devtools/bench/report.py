"""The table ``pgq bench`` prints (``--json`` prints the result itself)."""

from __future__ import annotations

from typing import Any


def format_report(result: dict[str, Any]) -> str:
    """The human-readable table ``pgq bench`` prints."""
    where = "kept" if result["kept"] else "dropped"
    lines = [
        f"pgq {result['pgq']} bench on PostgreSQL {result['server_version']} "
        f"(scratch database {result['database']}, {where}; {result['loop']})",
        "",
        f"{'scenario':<10} {'what':<46} result",
    ]
    if e := result.get("enqueue"):
        what = f"{e['jobs']:,} jobs, Client.enqueue_many"
        lines.append(
            f"{'enqueue':<10} {what:<46} {e['jobs_per_s']:>9,.0f} jobs/s  ({e['seconds']:.2f} s)"
        )
    if d := result.get("drain"):
        what = f"{d['jobs']:,} no-op jobs, Runner concurrency {d['concurrency']}"
        lines.append(
            f"{'drain':<10} {what:<46} {d['jobs_per_s']:>9,.0f} jobs/s  ({d['seconds']:.2f} s)"
        )
    if lat := result.get("latency"):
        what = f"{lat['samples']} single enqueues, {lat['interval_ms']:g} ms apart"
        lines.append(
            f"{'latency':<10} {what:<46} p50 {lat['p50_ms']:.2f}  p95 {lat['p95_ms']:.2f}  "
            f"p99 {lat['p99_ms']:.2f}  max {lat['max_ms']:.2f} ms  (commit → handler start)"
        )
    v = result["verification"]
    lines.append("")
    ran = v["handler_calls"]
    if v["ok"] and ran:
        lines.append(
            f"verified: all {v['jobs']:,} jobs succeeded, each handler ran exactly once "
            f"({ran:,} handler calls)"
        )
    elif v["ok"]:
        lines.append(f"verified: all {v['jobs']:,} jobs enqueued (none run: drain not chosen)")
    else:
        lines.append("VERIFICATION FAILED:")
        lines.extend(f"  - {p}" for p in v["problems"])
    if result.get("database_url"):
        lines.append(f"scratch database kept: {result['database_url']}")
    return "\n".join(lines)
