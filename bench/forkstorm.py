"""Fork-storm benchmark: can `spawnwatch trace --json > /dev/null` keep up with
the heaviest process churn this machine makes, and what does each BPF program
cost per event?

Runs one `forkloop` per core for DURATION seconds with the tracer attached,
between two half-length runs without it (the machine's speed drifts: the ratio
is to their mean), and prints forks/s for both, events/s and lost events from the tracer's own stats, and ns/event per
BPF program from kernel.bpf_stats_enabled (run_time_ns / run_cnt).  A shorter
exec storm (children exec /bin/true) follows, so the exec programs are
measured under load too.

    sudo make bench            # or: sudo .venv/bin/python bench/forkstorm.py --duration 30
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
FORKLOOP = HERE / "forkloop"
STATS_SYSCTL = Path("/proc/sys/kernel/bpf_stats_enabled")


def build_forkloop() -> None:
    source = HERE / "forkloop.c"
    if not FORKLOOP.exists() or FORKLOOP.stat().st_mtime < source.stat().st_mtime:
        subprocess.run(["cc", "-O2", "-o", str(FORKLOOP), str(source)], check=True)


def fork_storm(seconds: float, loops: int, mode: str = "fork") -> float:
    """Total forks per second of `loops` concurrent fork loops."""
    procs = [
        subprocess.Popen([str(FORKLOOP), str(seconds), mode], stdout=subprocess.PIPE, text=True)
        for _ in range(loops)
    ]
    started = time.monotonic()
    total = sum(int(p.communicate()[0]) for p in procs)
    return total / (time.monotonic() - started)


def bpftool(*args: str) -> object:
    return json.loads(subprocess.run(["bpftool", "--json", *args], check=True, capture_output=True, text=True).stdout)


def attached_programs(tracer_pid: int) -> dict[str, int]:
    """tracepoint name -> BPF program id, for the programs the tracer attached."""
    return {
        entry["tracepoint"]: entry["prog_id"]
        for entry in bpftool("perf", "list")
        if entry.get("pid") == tracer_pid and entry.get("fd_type") == "tracepoint"
    }


def program_counters(programs: dict[str, int]) -> dict[str, tuple[int, int]]:
    counters = {}
    for tracepoint, prog_id in programs.items():
        info = bpftool("prog", "show", "id", str(prog_id))
        counters[tracepoint] = (info.get("run_time_ns", 0), info.get("run_cnt", 0))
    return counters


def cost(before: dict, after: dict, tracepoint: str) -> str:
    (t0, n0), (t1, n1) = before[tracepoint], after[tracepoint]
    runs = n1 - n0
    return f"{(t1 - t0) / runs:6.0f} ns over {runs:7d} runs" if runs else f"{'(not run)':>25}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per phase (default 30)")
    parser.add_argument("--loops", type=int, default=os.cpu_count() or 2, help="fork loops (default: one per core)")
    options = parser.parse_args()
    if os.geteuid() != 0:
        print("error: the benchmark loads BPF programs: run it as root", file=sys.stderr)
        return 1
    build_forkloop()

    print(f"fork storm: {options.loops} loops x {options.duration:.0f} s", flush=True)
    untraced_first = fork_storm(options.duration / 2, options.loops)
    print(f"  without tracer: {untraced_first:10.0f} forks/s", flush=True)

    previous_stats = STATS_SYSCTL.read_text().strip()
    STATS_SYSCTL.write_text("1")
    stderr = tempfile.TemporaryFile(mode="w+")
    tracer = subprocess.Popen(
        [sys.executable, "-m", "spawnwatch", "trace", "--json"], stdout=subprocess.DEVNULL, stderr=stderr
    )
    try:
        deadline = time.monotonic() + 60
        programs: dict[str, int] = {}
        while len(programs) < 7:
            if tracer.poll() is not None or time.monotonic() > deadline:
                stderr.seek(0)
                print(f"error: tracer did not attach: {stderr.read().strip()}", file=sys.stderr)
                return 1
            time.sleep(0.2)
            programs = attached_programs(tracer.pid)
        before = program_counters(programs)
        traced = fork_storm(options.duration, options.loops)
        after_forks = program_counters(programs)
        exec_rate = fork_storm(options.duration / 3, options.loops, "exec")
        after = program_counters(programs)
    finally:
        tracer.send_signal(signal.SIGTERM)
        tracer.wait(timeout=120)
        STATS_SYSCTL.write_text(previous_stats)

    untraced_last = fork_storm(options.duration / 2, options.loops)
    baseline = (untraced_first + untraced_last) / 2
    print(f"  without, again: {untraced_last:10.0f} forks/s")
    stderr.seek(0)
    summary = stderr.read()
    match = re.search(r"^-- (.*); lost (\d+)", summary, re.MULTILINE)
    if not match:
        print(f"error: no stats from the tracer: {summary.strip()}", file=sys.stderr)
        return 1
    counts = dict((k, int(v)) for k, v in (item.rsplit(" ", 1) for item in match.group(1).split(", ")))
    lost = int(match.group(2))
    events = sum(counts.values())

    print(f"  with tracer:    {traced:10.0f} forks/s  ({traced / baseline:.2f} of the mean without)")
    print(f"  then exec storm:{exec_rate:10.0f} fork+exec/s for {options.duration / 3:.0f} s")
    print(f"  events:         {events:10d} in all ({match.group(1)})")
    print(f"  lost:           {lost:10d}")
    print("  BPF cost per event (kernel.bpf_stats_enabled), fork storm | exec storm:")
    for tracepoint in sorted(programs):
        print(f"    {tracepoint:<22} {cost(before, after_forks, tracepoint)} | {cost(after_forks, after, tracepoint)}")
    return 0 if lost == 0 else 2


if __name__ == "__main__":
    sys.exit(main())
