"""A Docker engine that stops and comes back while `watch` runs: `watch` notices it
gone, and containers started after the restart are still named (name and image,
not a bare id)."""

from __future__ import annotations

import os
import time
import uuid

import pytest

from live import LiveCommand

pytestmark = [pytest.mark.root, pytest.mark.docker, pytest.mark.slow]

# A restart as a package upgrade does it: the engine is away for seconds, long enough
# for spawnwatch to find it gone more than once (its reconnects back off 0.5, 1, 2, 4 s).
ENGINE_AWAY_S = 8.0
FOUND_GONE = 2
# One `sleep` a little more than a second apart, none ever ended: accumulating.
LEAK = "while true; do sleep 1000 & sleep 1.1; done"


def test_containers_started_after_an_engine_restart_are_named(private_engine):
    image = private_engine.import_busybox()
    env = {**os.environ, "DOCKER_HOST": private_engine.host}
    with LiveCommand("-vv", "watch", "--json", env=env) as watch:  # -vv: each failed reach of the engine is told
        before = len(watch.stderr_lines())
        private_engine.stop()
        stopped = time.monotonic()
        watch.wait_for_stderr(lambda lines: sum("no Docker engine" in line for line in lines[before:]) >= FOUND_GONE,
                              f"the engine found gone {FOUND_GONE} times", timeout=60)
        time.sleep(max(0.0, ENGINE_AWAY_S - (time.monotonic() - stopped)))  # the rest of the outage
        private_engine.start()
        name = f"spawnwatch-restart-{uuid.uuid4().hex[:8]}"
        script = f"{LEAK}  # {name}"  # ours alone: other tests on this host run the same leak
        container_id = private_engine.cli("run", "-d", "--network", "none", "--name", name, image, "sh", "-c", script)
        records = watch.wait_for(
            lambda rs: any(r["kind"] == "alert" and r["spawner"]["argv"][-1:] == [script] for r in rs), timeout=90
        )
    alerts = [r for r in records if r["kind"] == "alert" and r["spawner"]["argv"][-1:] == [script]]
    assert alerts, f"no alert for the container's leak; stderr: {watch.stderr[-2000:]}"
    assert alerts[0]["rule"] == "accumulating"
    assert alerts[0]["container"] == {"id": container_id, "name": name, "image": image, "runtime": "docker"}
