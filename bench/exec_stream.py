"""A synthetic exec storm through `watch`'s user-space path, no kernel and no root:
the kernel's records (each child's one exec_brief, as watch's kernel side sends a
short exec'd life and tests/records.py encodes it) decoded and completed by a Probe,
as its ring's records are, then fed to the Pipeline with the default config.  The CPU per exec'd process, with every
child's command line the same (a leak's children) and with each its own (a build
host's).  What the live exec storm costs less the ring, /proc and the sinks, and
steadier than it on a loaded machine: compare trees with it side by side.

    .venv/bin/python bench/exec_stream.py                   # 50,000 children each way
    PYTHONPATH=/tmp/before/src .venv/bin/python bench/exec_stream.py
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from records import encode  # noqa: E402 (the kernel's layout, written in user space)

from spawnwatch.config import load  # noqa: E402
from spawnwatch.events import ExecBrief, ProcessInfo, Snapshot  # noqa: E402
from spawnwatch.pipeline import Pipeline  # noqa: E402
from spawnwatch.probe import Probe  # noqa: E402

SPAWNERS = (100, 101)
FIRST_CHILD_PID = 1000
RECORDS_PER_POLL = 4000  # what a poll of the ring takes in a live exec storm, about


def storm(children: int, distinct: bool) -> list[bytes]:
    """Each child's record, spawners taking turns, as bench/forkloop.c's exec modes run."""
    raws = []
    for n in range(children):
        ts, pid, spawner = 10.0 + n * 1e-4, FIRST_CHILD_PID + n, SPAWNERS[n % len(SPAWNERS)]
        argv = ("/bin/true", f"--package=file:/tmp/forkloop{f'-{spawner}-{n}' if distinct else ''}", "--", "server")
        raws.append(encode(ExecBrief(ts, pid, spawner, "true", 7, ts + 4e-5, ts + 5e-5, ts + 2e-5, argv, "/bin/true")))
    return raws


def cpu_per_child_us(children: int, distinct: bool) -> float:
    raws = storm(children, distinct)
    probe = Probe(parent_of=lambda pid: None)
    pipeline = Pipeline(load(None))
    pipeline.feed(Snapshot(9.5, (ProcessInfo(1, 0, 0.5, "systemd", ("/sbin/init",)),
                                 *(ProcessInfo(pid, 1, 9.0, "forkloop", ("bench/forkloop", "10", "exec"), 7)
                                   for pid in SPAWNERS))))
    feed = pipeline.feed
    started = time.process_time()
    for first in range(0, len(raws), RECORDS_PER_POLL):
        for event in probe.decode_batch(raws[first : first + RECORDS_PER_POLL]):
            feed(event)
    return (time.process_time() - started) / children * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--children", type=int, default=50_000, help="exec'd children each way (default 50,000)")
    parser.add_argument("--rounds", type=int, default=3, help="runs each way, the median reported (default 3)")
    options = parser.parse_args()
    for distinct in (False, True):
        runs = sorted(cpu_per_child_us(options.children, distinct) for _ in range(options.rounds))
        print(f"argv {'each its own' if distinct else 'the same in every child'}: decode + redact + lineage +"
              f" detect {runs[len(runs) // 2]:6.2f} us CPU per exec'd process"
              f" ({', '.join(f'{r:.2f}' for r in runs)}; {options.children} children)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
