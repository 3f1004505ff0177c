"""The ledger a `watch` keeps while an orphaned_containers alert fires, written by a test for
`reap` and `report` to read."""

from __future__ import annotations

import os
import subprocess
from typing import Any

from spawnwatch.runner import ready_record
from spawnwatch.sinks.ledger import Ledger

DOCKER_SIGNATURE = "docker run <image> sleep <n>"


def alert_container(container_id: str, **more: Any) -> dict[str, Any]:
    """A leaked container as the alert lists it (`more`: runtime, ambiguous, ...)."""
    return {"id": container_id, "name": container_id[:12], "image": "spawnwatch-test", "memory_bytes": 0, **more}


def keep_ledger(state_dir: str, spawner: subprocess.Popen, containers: list[dict[str, Any]],
                signature: str = DOCKER_SIGNATURE, writer: dict | None = None) -> Ledger:
    """The ledger `watch` keeps when its orphaned_containers alert fires for `spawner` (closing
    it removes the file)."""
    sink = Ledger(state_dir)
    sink.send(writer or ready_record())
    sink.send({
        "kind": "alert", "state": "firing", "rule": "orphaned_containers", "severity": "warning",
        "signature": signature,
        "spawner": {"pid": spawner.pid, "ppid": os.getpid(), "argv": list(spawner.args), "comm": "sleep"},
        "container": None, "live": 0, "spawned": len(containers), "exited": len(containers), "zombies": 0,
        "orphans": len(containers), "rss_bytes": 0, "pids": [], "message": "left running",
        "containers": containers,
    })
    return sink
