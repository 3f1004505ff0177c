"""A leaky supervisor whose own argv and whose children's argv carry secrets.

    python3 secret_leak.py supervise [its own secrets...] PLAN INTERVAL

PLAN is a JSON file: a list of argument lists, one per child.  Every INTERVAL
seconds the supervisor starts `python3 secret_leak.py ARGS...` for the next one
and never waits for it; each child holds CHILD_MB MiB and sleeps.  argv[0] is
`python3` whatever the interpreter's path, so the secrets come early in a line.  One JSON
line per child on stdout: {"pid": ...}.  SIGTERM ends the children, then the
supervisor.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

CHILD_MB = 40  # enough for the group to rank among the host's largest in `report`


def child() -> None:
    held = bytearray(CHILD_MB * 1024 * 1024)
    held[:: 4096] = b"x" * len(held[:: 4096])  # touch every page: resident, not just reserved
    while True:
        time.sleep(3600)


def supervise(plan_path: str, interval: float) -> None:
    with open(plan_path) as f:
        plan = json.load(f)
    children: list[subprocess.Popen] = []

    def stop(_signum: int, _frame: object) -> None:
        for process in children:
            process.kill()
        for process in children:
            process.wait()
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    for args in plan:
        children.append(subprocess.Popen(["python3", __file__, *args], executable=sys.executable))
        print(json.dumps({"pid": children[-1].pid}), flush=True)
        time.sleep(interval)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    if sys.argv[1] == "supervise":
        supervise(sys.argv[-2], float(sys.argv[-1]))
    else:
        child()
