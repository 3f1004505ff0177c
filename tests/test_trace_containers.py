"""`trace` names containers and filters by them, on a real dockerd."""

from __future__ import annotations

import uuid

import pytest

from live import LiveCommand

pytestmark = [pytest.mark.root, pytest.mark.docker]


def test_trace_names_the_container_and_filters_by_it(docker_env):
    name = f"spawnwatch-trace-{uuid.uuid4().hex[:8]}"
    marker = uuid.uuid4().hex
    with LiveCommand("trace", "--json", "--container", name) as trace:
        container_id = docker_env.run("sh", "-c", f"sleep 0.3; echo {marker} >/dev/null; exec sleep 30", name=name)
        trace.wait_for(lambda rs: any(r["kind"] == "exec" and r["argv"][:2] == ["sleep", "30"] for r in rs),
                       "the exec of `sleep 30` in the container")
    events = [r for r in trace.records if r["kind"] not in ("ready", "stats")]
    assert events, trace.stderr
    expected = {"id": container_id, "name": name, "image": docker_env.image, "runtime": "docker"}
    assert all(r["container"] == expected for r in events)
    assert any(r["kind"] == "exec" and r["argv"] == ["sh", "-c", f"sleep 0.3; echo {marker} >/dev/null; exec sleep 30"]
               for r in events)


def test_tree_shows_only_the_named_container(docker_env):
    import json
    import subprocess
    import sys

    name = f"spawnwatch-tree-{uuid.uuid4().hex[:8]}"
    container_id = docker_env.run("sh", "-c", "sleep 300 & sleep 300 & sleep 300 & wait", name=name)
    out = subprocess.run([sys.executable, "-m", "spawnwatch", "tree", "--json", "--container", name],
                         capture_output=True, text=True, check=True)
    (root,) = json.loads(out.stdout)["roots"]
    assert root["container"] == {"id": container_id, "name": name, "image": docker_env.image, "runtime": "docker"}
    assert root["pids"] == [docker_env.pid(container_id)]
    (sleeps,) = root["children"]
    assert sleeps["count"] == 3 and sleeps["signature"].startswith("sleep")
