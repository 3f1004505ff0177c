"""A synthetic fork storm through the Pipeline, no kernel and no root: the CPU per
event of decode + lineage + detect (the replay path without reading the file), and
the anonymous RSS as the process table fills to its cap and stays there.

Two spawners fork children that exit and are reaped at once (the shape of
bench/forkloop.c), 10,000 processes per second of event time, one child in a
hundred exec'ing a program of its own; every record goes through
`events.from_record` and `Pipeline.feed` with the default config, exactly as
`watch --replay` feeds them.  As the kernel side sends them, a child that did not
exec comes as one `brief` record; `--per-event` sends every child as its fork,
exit and reap instead (the records of a process whose fork the kernel had to send
on its own, and of every process before the kernel side sent Briefs).

    .venv/bin/python bench/pipeline_stream.py                   # 1,000,000 processes
    .venv/bin/python bench/pipeline_stream.py --processes 200000 --per-event
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Iterator

from spawnwatch.config import load
from spawnwatch.events import from_record
from spawnwatch.pipeline import Pipeline

PROCESSES_PER_SECOND = 10_000
SPAWNERS = (100, 101)
FIRST_CHILD_PID = 1000
PID_MAX = 4_194_304
EXEC_EVERY = 100
CGROUP_ID = 7


def anon_rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no RssAnon in /proc/self/status")


def storm(processes: int, per_event: bool) -> Iterator[dict[str, Any]]:
    """A snapshot of init and the spawners, then each child: fork, (exec,) exit and reap,
    or one brief record for a child that did not exec (unless `per_event`)."""
    yield {"kind": "snapshot", "ts": 10.0, "processes": [
        {"pid": 1, "ppid": 0, "start": 0.5, "comm": "systemd", "argv": ["/sbin/init"], "cgroup_id": 1},
        *({"pid": pid, "ppid": 1, "start": 9.0, "comm": "forkloop", "argv": ["bench/forkloop", "30"],
           "cgroup_id": CGROUP_ID} for pid in SPAWNERS),
    ]}
    pid = FIRST_CHILD_PID
    for n in range(processes):
        ts = 10.0 + n / PROCESSES_PER_SECOND
        spawner = SPAWNERS[n % len(SPAWNERS)]
        common = {"pid": pid, "ppid": spawner, "comm": "forkloop", "cgroup_id": CGROUP_ID}
        execs = n % EXEC_EVERY == 0
        if not execs and not per_event:
            yield {"kind": "brief", "ts": ts, **common, "exited_at": ts + 40e-6, "reaped_at": ts + 50e-6}
            pid = pid + 1 if pid + 1 < PID_MAX else FIRST_CHILD_PID
            continue
        yield {"kind": "fork", "ts": ts, **common}
        if execs:
            yield {"kind": "exec", "ts": ts + 20e-6, **common, "comm": "true", "filename": "/bin/true",
                   "argv": ["/bin/true", "--package=file:/tmp/forkloop", "--", "server"], "argv_truncated": False}
        yield {"kind": "exit", "ts": ts + 40e-6, **common}
        yield {"kind": "reap", "ts": ts + 50e-6, **common}
        pid = pid + 1 if pid + 1 < PID_MAX else FIRST_CHILD_PID


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=1_000_000, help="children forked (default 1,000,000)")
    parser.add_argument("--per-event", action="store_true",
                        help="every child as its fork, exit and reap, none as a brief record")
    options = parser.parse_args()
    config = load(None)
    cap = config.lineage.max_processes
    checkpoints = sorted({cap, 2 * cap, options.processes // 4, options.processes // 2, options.processes})

    started = time.process_time()
    generated = sum(1 for _ in storm(options.processes, options.per_event))
    generation_s = time.process_time() - started

    pipeline = Pipeline(config)
    print(f"synthetic storm: {options.processes} processes, {generated} records; table cap {cap}")
    print(f"  anon RSS before: {anon_rss_bytes() / 2**20:7.1f} MiB")
    rss_at: dict[int, int] = {}
    forks = 0
    started = time.process_time()
    for record in storm(options.processes, options.per_event):
        pipeline.feed(from_record(record))
        if record["kind"] in ("fork", "brief"):
            forks += 1
            if forks in checkpoints:
                rss_at[forks] = anon_rss_bytes()
    spent_s = time.process_time() - started - generation_s
    for processes, rss in rss_at.items():
        print(f"  anon RSS after {processes:9d} processes: {rss / 2**20:7.1f} MiB  (table {'at cap' if processes >= cap else 'filling'})")
    print(f"  table: {len(pipeline.lineage)} processes, {pipeline.lineage.counts['evicted']} evicted,"
          f" {len(pipeline.detector.groups)} groups")
    print(f"  CPU per record (decode + lineage + detect): {spent_s / generated * 1e6:5.2f} us"
          f"  ({spent_s / options.processes * 1e6:.2f} us per process; generating the records,"
          f" {generation_s / generated * 1e6:.2f} us each, not counted)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
