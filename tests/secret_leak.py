"""A leaky supervisor whose own argv and whose children's argv carry secrets.

    python3 secret_leak.py supervise [its own secrets...] PLAN INTERVAL

PLAN is a JSON file: a list of argument lists, one per child.  Every INTERVAL
seconds the supervisor starts `python3 secret_server.py ARGS...` for the next one
(a program of its own, as an MCP host's servers are) and never waits for it; each
child holds CHILD_MB MiB and sleeps.  argv[0] is
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
from pathlib import Path

SERVER = Path(__file__).resolve().parent / "secret_server.py"


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
        children.append(subprocess.Popen(["python3", str(SERVER), *args], executable=sys.executable))
        print(json.dumps({"pid": children[-1].pid}), flush=True)
        time.sleep(interval)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    supervise(sys.argv[-2], float(sys.argv[-1]))
