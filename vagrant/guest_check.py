"""Inside the Vagrant guest: wait for the spawnwatch service's alert about the leak (its
JSON lines in the journal), show it with the spawn tree, and check that it names the
leaking supervisor and its container.

    sudo python3 /srv/spawnwatch/vagrant/guest_check.py [--timeout SECONDS]

Exit status 0 when the alert is right, 1 when it is wrong or none came in time.
Standard library only: it runs before and beside the project's venv.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

SERVICE = "spawnwatch"  # deploy/systemd/spawnwatch.service, as provision.sh installs it
CONTAINER = "spawnwatch-leak"  # the name spawnwatch-leak.service gives its container
SUPERVISOR = "supervisor.js"


def journal() -> list[dict]:
    """The service's journal entries of this boot, with their MESSAGE and monotonic time."""
    shown = subprocess.run(["journalctl", "-b", "-u", SERVICE, "-o", "json", "--output-fields=MESSAGE"],
                           capture_output=True, text=True).stdout
    return [json.loads(line) for line in shown.splitlines()]


def firing_alerts() -> list[tuple[dict, float]]:
    """Firing alerts, each with when the journal got it (seconds of CLOCK_MONOTONIC)."""
    alerts = []
    for entry in journal():
        try:
            record = json.loads(entry.get("MESSAGE") or "null")
        except (json.JSONDecodeError, TypeError):
            continue  # not a JSON line: the service's own words on stderr
        if isinstance(record, dict) and record.get("kind") == "alert" and record.get("state") == "firing":
            alerts.append((record, int(entry["__MONOTONIC_TIMESTAMP"]) / 1e6))
    return alerts


def supervisor_pids() -> set[int]:
    """Host pids of processes running the leaky supervisor (in the container)."""
    pids = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(arg.decode(errors="replace").endswith(SUPERVISOR) for arg in argv):
            pids.add(int(entry.name))
    return pids


def problems_with(alert: dict, supervisors: set[int]) -> list[str]:
    problems = []
    spawner = alert.get("spawner") or {}
    if spawner.get("pid") not in supervisors:
        problems.append(f"spawner pid {spawner.get('pid')} is not the supervisor's ({sorted(supervisors)})")
    if not any(str(arg).endswith(SUPERVISOR) for arg in spawner.get("argv") or []):
        problems.append(f"spawner argv {spawner.get('argv')} is not the supervisor")
    container = alert.get("container") or {}
    if container.get("name") != CONTAINER:
        problems.append(f"container {alert.get('container')} is not {CONTAINER}")
    return problems


def monotonic_of(unit: str, field: str) -> float | None:
    shown = subprocess.run(
        ["systemctl", "show", f"--property={field}", "--value", unit], capture_output=True, text=True
    ).stdout.strip()
    return int(shown) / 1e6 if shown.isdigit() and shown != "0" else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for the alert")
    args = parser.parse_args()

    deadline = time.monotonic() + args.timeout
    while True:
        alerts = firing_alerts()
        supervisors = supervisor_pids()
        right = [(alert, at) for alert, at in alerts if not problems_with(alert, supervisors)]
        if right or time.monotonic() > deadline:
            break
        time.sleep(1)
    if not right:
        print(f"guest-check: no right alert from the {SERVICE} service after {args.timeout:.0f} s", file=sys.stderr)
        for alert, _ in alerts:
            print(f"guest-check: wrong {alert['rule']} alert: {'; '.join(problems_with(alert, supervisors))}",
                  file=sys.stderr)
        subprocess.run(["journalctl", "--no-pager", "-n", "30", "-u", SERVICE, "-u", "spawnwatch-leak"])
        return 1
    alert, at = right[0]
    started = monotonic_of("spawnwatch-leak", "ActiveEnterTimestampMonotonic")
    print(json.dumps(alert, indent=2))
    subprocess.run(["/usr/local/bin/spawnwatch", "tree"])
    if started is not None:
        print(f"guest-check: the alert came {at - started:.0f} s after the leak started")
    print(f"guest-check: OK: the {SERVICE} service's {alert['rule']} alert names the supervisor "
          f"(pid {alert['spawner']['pid']}) in container {CONTAINER}")
    return 0

if __name__ == "__main__":
    sys.exit(main())
