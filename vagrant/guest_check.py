"""Inside the Vagrant guest: wait for spawnwatch-watch's alert about the leak, show it
with the spawn tree, and check that it names the leaking supervisor and its container.

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

REPO = Path(__file__).resolve().parents[1]
ALERTS = REPO / "vagrant" / "out" / "alerts.jsonl"
CONTAINER = "spawnwatch-leak"  # the name spawnwatch-leak.service gives its container
SUPERVISOR = "supervisor.js"


def firing_alerts() -> list[dict]:
    if not ALERTS.exists():
        return []
    records = []
    for line in ALERTS.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line still being written
        if record.get("kind") == "alert" and record.get("state") == "firing":
            records.append(record)
    return records


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


def seconds_to_alert(alert: dict) -> float | None:
    """From the start of spawnwatch-leak to the journal entry of ALERT."""
    started = monotonic_of("spawnwatch-leak", "ActiveEnterTimestampMonotonic")
    journal = subprocess.run(
        ["journalctl", "-u", "spawnwatch-watch", "-o", "json", "--output-fields=MESSAGE"],
        capture_output=True,
        text=True,
    ).stdout
    for line in journal.splitlines():
        entry = json.loads(line)
        try:
            if started is not None and json.loads(entry.get("MESSAGE") or "null") == alert:
                return int(entry["__MONOTONIC_TIMESTAMP"]) / 1e6 - started
        except (json.JSONDecodeError, TypeError):
            continue
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for the alert")
    args = parser.parse_args()

    deadline = time.monotonic() + args.timeout
    while True:
        alerts = firing_alerts()
        supervisors = supervisor_pids()
        right = [alert for alert in alerts if not problems_with(alert, supervisors)]
        if right or time.monotonic() > deadline:
            break
        time.sleep(1)
    if not right:
        print(f"guest-check: no right alert in {ALERTS} after {args.timeout:.0f} s", file=sys.stderr)
        for alert in alerts:
            print(f"guest-check: wrong {alert['rule']} alert: {'; '.join(problems_with(alert, supervisors))}",
                  file=sys.stderr)
        subprocess.run(["journalctl", "--no-pager", "-n", "30", "-u", "spawnwatch-watch", "-u", "spawnwatch-leak"])
        return 1
    elapsed = seconds_to_alert(right[0])
    print(json.dumps(right[0], indent=2))
    subprocess.run([str(REPO / ".venv" / "bin" / "spawnwatch"), "tree"])
    if elapsed is not None:
        print(f"guest-check: the alert came {elapsed:.0f} s after the leak started")
    print(f"guest-check: OK: {right[0]['rule']} alert names the supervisor (pid {right[0]['spawner']['pid']}) "
          f"in container {CONTAINER}")
    return 0

if __name__ == "__main__":
    sys.exit(main())
