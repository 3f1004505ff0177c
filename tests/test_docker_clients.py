"""MCP servers run as containers, for real: a host on this machine starts `docker run -i
--rm IMAGE node /pkg/bin/magic.js` clients (supervisor.js --launcher docker) and `watch`
follows both the processes and the engine's events.

- the host keeping its clients: `accumulating` with a `docker run <image> ...` signature;
- the host SIGKILLing each client after 1 s, the containers living on (their server
  ignores the end of stdin): `orphaned_containers` charged to the host's pid, with the
  image and the containers, and `watch --replay` of the recording raises it again;
  `reap --yes`, on the ledger of that `watch`, removes exactly the containers it lists;
- clients and their containers already running when `watch` starts (the clients from its
  /proc snapshot, the containers listed from the engine): the same alert once the host's
  clients are killed, and the same from the replay;
- `docker run -d` from a script that exits, compose-labelled containers, and a host that
  stops its containers itself, both from before `watch` and while it runs: nothing.

Every container carries this session's label and a label of its own test, by which the
test removes them, whatever happened."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Iterator

import pytest

import docker_env as docker_env_module
from conftest import wait_for
from live import LiveCommand
from spawnwatch.simulate import PACKAGE

pytestmark = [pytest.mark.root, pytest.mark.docker, pytest.mark.npm]

ALERT_TIMEOUT = 90.0
SERVER = "magic"
QUIET_S = 25.0  # how long healthy starts are watched for an alert that must not come


@pytest.fixture
def label(docker_env) -> Iterator[str]:
    """A label of this test's own; its containers are removed at the end, whatever happened."""
    case = f"spawnwatch.test.case={uuid.uuid4().hex[:12]}"
    yield case
    leftovers = docker_env.cli("ps", "-aq", "--filter", f"label={case}", check=False).split()
    if leftovers:
        docker_env.cli("rm", "-f", *leftovers, check=False)


def image_name(image: str) -> str:
    """The image as signatures show it: without its tag."""
    return image.rsplit(":", 1)[0]


def start_host(docker_env, label: str, mode: str, *options: str, stdout: Path | None = None) -> subprocess.Popen:
    """The MCP host: supervisor.js starting `docker run -i --rm` servers every 1.5 s (its
    records to the file `stdout`, when given)."""
    with open(stdout, "w") if stdout else open(os.devnull) as out:
        return subprocess.Popen(
            ["node", str(PACKAGE / "supervisor.js"), mode, "--launcher", "docker", "--image", docker_env.image,
             "--docker-arg=--network=none", f"--docker-arg=--label={docker_env_module.SESSION_LABEL}",
             f"--docker-arg=--label={label}", "--interval", "1.5", "--max", "16", *options],
            stdout=out if stdout else subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "DOCKER_HOST": docker_env.host},
        )


def stop_host(host: subprocess.Popen) -> str:
    """Stop the host (its own cleanup: SIGTERM to its clients); its stderr."""
    if host.poll() is None:
        host.send_signal(signal.SIGTERM)
    try:
        _, stderr = host.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        host.kill()
        _, stderr = host.communicate()
    return stderr[-2000:]


def firing(records: list[dict], rule: str, spawner_pid: int) -> list[dict]:
    return [r for r in records if r.get("kind") == "alert" and r["state"] == "firing" and r["rule"] == rule
            and r["spawner"]["pid"] == spawner_pid]


def containers_of(docker_env, label: str, *states: str) -> set[str]:
    return set(docker_env.cli("ps", "-q", "--no-trunc", "--filter", f"label={label}", *states).split())


def test_a_host_keeping_its_docker_run_clients_is_accumulating(docker_env, label) -> None:
    with LiveCommand("watch", "--json") as watch:
        host = start_host(docker_env, label, "accumulate")
        try:
            records = watch.wait_for(lambda rs: firing(rs, "accumulating", host.pid),
                                     "an accumulating alert for the host", timeout=ALERT_TIMEOUT)
        finally:
            stderr = stop_host(host)
    [alert] = firing(records, "accumulating", host.pid)[:1]
    assert alert["signature"] == f"docker run {image_name(docker_env.image)} node /pkg/bin/{SERVER}.js", stderr
    assert alert["live"] >= 9 and alert["spawner"]["argv"][:2] == ["node", str(PACKAGE / "supervisor.js")]
    assert not firing(watch.records, "orphaned_containers", host.pid)


def test_containers_left_by_killed_clients_are_charged_to_the_host(docker_env, label, tmp_path) -> None:
    recording = tmp_path / "leak.msgpack"
    with LiveCommand("watch", "--json", "--record", str(recording)) as watch:
        host = start_host(docker_env, label, "orphan", "--session", "1")
        try:
            records = watch.wait_for(lambda rs: firing(rs, "orphaned_containers", host.pid),
                                     "an orphaned_containers alert for the host", timeout=ALERT_TIMEOUT)
            running = containers_of(docker_env, label)
        finally:
            stderr = stop_host(host)
    [alert] = firing(records, "orphaned_containers", host.pid)[:1]
    assert alert["orphans"] == len(alert["containers"]) >= 8, stderr
    leaked = {c["id"] for c in alert["containers"]}
    assert leaked <= running  # containers of this host, still running when it fired
    assert all(c["image"] == docker_env.image and c["name"] for c in alert["containers"])
    assert all(c["memory_bytes"] and c["memory_bytes"] > 0 for c in alert["containers"])
    assert alert["rss_bytes"] == sum(c["memory_bytes"] for c in alert["containers"])
    assert docker_env.image in alert["message"] and f"{alert['orphans']} containers" in alert["message"]
    assert alert["signature"] == f"docker run {image_name(docker_env.image)} node /pkg/bin/{SERVER}.js"
    assert not firing(records, "accumulating", host.pid)

    replay = subprocess.run([sys.executable, "-m", "spawnwatch", "watch", "--replay", str(recording), "--json"],
                            capture_output=True, text=True, timeout=120)
    assert replay.returncode == 0, replay.stderr
    replayed = firing([json.loads(line) for line in replay.stdout.splitlines()], "orphaned_containers", host.pid)
    assert replayed, replay.stderr[-2000:]
    assert replayed[0]["signature"] == alert["signature"] and replayed[0]["orphans"] == alert["orphans"]
    assert [(c["id"], c["name"], c["image"]) for c in replayed[0]["containers"]] == [
        (c["id"], c["name"], c["image"]) for c in alert["containers"]]


def reap(*args: str) -> dict:
    done = subprocess.run([sys.executable, "-m", "spawnwatch", "reap", *args, "--json"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)


def test_reap_ends_exactly_the_containers_the_alert_lists(docker_env, label, tmp_path) -> None:
    state_dir = str(tmp_path / "state")  # not /run/spawnwatch: other sessions' watches may run
    with LiveCommand("watch", "--json", "--state-dir", state_dir) as watch:
        host = start_host(docker_env, label, "orphan", "--session", "1")
        try:
            records = watch.wait_for(lambda rs: firing(rs, "orphaned_containers", host.pid),
                                     "an orphaned_containers alert for the host", timeout=ALERT_TIMEOUT)
            alert = firing(records, "orphaned_containers", host.pid)[0]
            select = ("--signature", alert["signature"], "--spawner", str(host.pid), "--state-dir", state_dir)
            dry = reap(*select)
            listed = {c["id"] for c in dry["containers"]}
            # the ledger holds the alert as last sent: the first record's, or a later update's
            assert {c["id"] for c in alert["containers"]} <= listed and len(listed) >= 8, dry
            before = containers_of(docker_env, label)
            assert listed <= before  # a dry run ends nothing

            ended = reap(*select, "--yes")
            after = containers_of(docker_env, label)
        finally:
            stderr = stop_host(host)
    assert set(ended["ended"]) == listed, (ended, stderr)
    assert not listed & after  # every listed one ended ...
    assert before - listed <= after  # ... and none other: the host's newer, still attached ones run on


HEALTHY_SCRIPT = """
set -e
docker run -d {run} --name "detached-$$" {image} sleep 300
for i in 1 2 3 4 5 6 7 8 9 10; do
    docker run -d {run} --label com.docker.compose.project=spawnwatch-test \\
        --label com.docker.compose.service=web --name "compose-$$-$i" {image} sleep 300
done
"""

# Keeps its clients attached, then stops the containers itself and outlives them (no --rm:
# the stopped containers stay, only their die tells they ended).
STOPPING_HOST = """
for i in 1 2 3 4 5 6 7 8 9 10; do
    docker run -i {run} --name "stopping-$$-$i" {image} sleep 300 < /dev/null > /dev/null &
done
tries=0
until [ "$(docker ps -q --filter label={label} --filter name=stopping- | wc -l)" -ge 10 ] || [ $tries -ge 240 ]; do
    sleep 0.5; tries=$((tries + 1))
done
sleep 5
docker stop -t 1 $(docker ps -q --filter label={label} --filter name=stopping-) > /dev/null
wait
sleep {quiet}
"""


# --- clients and containers already running when `watch` starts ----------------------------

BEFORE = 9  # clients the host starts before `watch` (min_containers is 8)


def container_names(docker_env, label: str) -> dict[str, str]:
    """id -> name of the running containers carrying `label`."""
    listed = docker_env.cli("ps", "--no-trunc", "--filter", f"label={label}", "--format", "{{.ID}} {{.Names}}")
    return dict(line.split() for line in listed.splitlines())


def test_clients_running_before_watch_leave_their_containers_charged_to_the_host(docker_env, label,
                                                                                tmp_path) -> None:
    host_records = tmp_path / "host.jsonl"
    # An orphan-mode host whose sessions outlast the test: it keeps its clients until the test kills them.
    host = start_host(docker_env, label, "orphan", "--max", str(BEFORE), "--interval", "0.5", "--session", "3600",
                      stdout=host_records)
    recording = tmp_path / "before.msgpack"
    try:
        def answered() -> list[int]:
            up = [r["pid"] for r in map(json.loads, host_records.read_text().splitlines()) if r["kind"] == "up"]
            assert host.poll() is None, f"the host ended: {host_records.read_text()[-2000:]}"
            return up if len(up) == BEFORE else []

        clients = wait_for(answered, f"{BEFORE} servers up in their containers", deadline=240)
        names = wait_for(lambda: len(found := container_names(docker_env, label)) == BEFORE and found,
                         f"{BEFORE} running containers")
        with LiveCommand("watch", "--json", "--record", str(recording)) as watch:
            for client in clients:
                os.kill(client, signal.SIGKILL)

            def all_charged(records: list[dict]) -> list[dict]:
                return [r for r in firing(records, "orphaned_containers", host.pid)
                        if {c["name"] for c in r["containers"]} == set(names.values())]

            records = watch.wait_for(all_charged, f"orphaned_containers naming the {BEFORE} containers",
                                     timeout=ALERT_TIMEOUT)
        still_running = container_names(docker_env, label)
    finally:
        stderr = stop_host(host)
    alert = all_charged(records)[0]
    assert {c["id"] for c in alert["containers"]} == set(names) == set(still_running), stderr
    assert alert["orphans"] == BEFORE and all(c["image"] == docker_env.image for c in alert["containers"])
    assert alert["signature"] == f"docker run {image_name(docker_env.image)} node /pkg/bin/{SERVER}.js"

    replay = subprocess.run([sys.executable, "-m", "spawnwatch", "watch", "--replay", str(recording), "--json"],
                            capture_output=True, text=True, timeout=120)
    assert replay.returncode == 0, replay.stderr

    def charged(records: list[dict]) -> list[tuple]:
        return [(r["signature"], r["orphans"], [(c["id"], c["name"], c["image"]) for c in r["containers"]])
                for r in firing(records, "orphaned_containers", host.pid)]

    replayed = [json.loads(line) for line in replay.stdout.splitlines()]
    assert charged(replayed) == charged(watch.records), replay.stderr[-2000:]


# Started before `watch`: ten `docker run -i` clients whose host, once `watch` runs (the file
# {go} exists), stops their containers itself, and outlives them.
STOPPING_BEFORE = """
for i in 1 2 3 4 5 6 7 8 9 10; do
    docker run -i {run} --name "before-$$-$i" {image} sleep 300 < /dev/null > /dev/null &
done
until [ -e {go} ]; do sleep 0.2; done
docker stop -t 1 $(docker ps -q --filter label={label} --filter name=before-) > /dev/null
wait
sleep {quiet}
"""


def test_detached_compose_and_self_stopped_containers_before_and_during_watch_raise_nothing(
        docker_env, label, tmp_path) -> None:
    """Both halves at once, under one quiet time: a `-d` script's containers and a host that
    stops its containers itself, from before `watch` (its /proc snapshot, the engine's list)
    and while it runs (the engine's events)."""
    run = f"--network none --label {docker_env_module.SESSION_LABEL} --label {label}"
    env = {**os.environ, "DOCKER_HOST": docker_env.host}

    def detach() -> set[str]:
        before = containers_of(docker_env, label)
        script = subprocess.run(["sh", "-c", HEALTHY_SCRIPT.format(run=run, image=docker_env.image)],
                                capture_output=True, text=True, timeout=300, env=env)
        assert script.returncode == 0, script.stderr
        return containers_of(docker_env, label) - before

    detached = detach()
    go = tmp_path / "go"
    stopping_before = subprocess.Popen(
        ["sh", "-c", STOPPING_BEFORE.format(run=run, image=docker_env.image, label=label, go=go, quiet=QUIET_S)],
        env=env, stderr=subprocess.PIPE, text=True,
    )
    stopping_during = None
    try:
        attached = wait_for(lambda: len(found := containers_of(docker_env, label) - detached) == 10 and found,
                            "the first stopping host's 10 containers", deadline=240)
        with LiveCommand("watch", "--json") as watch:
            detached |= detach()
            go.touch()
            stopping_during = subprocess.Popen(
                ["sh", "-c", STOPPING_HOST.format(run=run, image=docker_env.image, label=label, quiet=QUIET_S)],
                env=env, stderr=subprocess.PIPE, text=True,
            )
            # each host's last `sleep` is the quiet time in which a wrong alert would come
            for host in (stopping_before, stopping_during):
                assert host.wait(timeout=300) == 0, host.stderr.read()
            still_running = containers_of(docker_env, label)
    finally:
        for host in (stopping_before, stopping_during):
            if host is not None and host.poll() is None:
                host.kill()
    assert len(detached) == 22 and still_running == detached  # the stopping hosts' own are gone
    hosts = {stopping_before.pid, stopping_during.pid}
    ours = [r for r in watch.records if r.get("kind") == "alert" and (
        r["spawner"]["pid"] in hosts or {c["id"] for c in r["containers"]} & (detached | attached))]
    assert ours == [], ours


def report_json(state_dir: str) -> dict:
    done = subprocess.run([sys.executable, "-m", "spawnwatch", "report", "--state-dir", state_dir, "--json"],
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return json.loads(done.stdout)


def test_a_restarted_watch_still_charges_the_host_its_leaked_containers(docker_env, label, tmp_path) -> None:
    """`watch` stopped (SIGTERM), started again, crashed (SIGKILL), started again: each new
    one names the host and its containers, but for one removed while none watched; then
    `report` lists them and `reap --yes` ends them.  About 3 watch starts and one leak."""
    state_dir = str(tmp_path / "state")
    start_watch = ("watch", "--json", "--state-dir", state_dir)
    host = None
    try:
        with LiveCommand(*start_watch) as first:
            host = start_host(docker_env, label, "orphan", "--session", "1")
            records = first.wait_for(lambda rs: firing(rs, "orphaned_containers", host.pid),
                                     "an orphaned_containers alert for the host", timeout=ALERT_TIMEOUT)
        leaked = {c["id"] for c in firing(records, "orphaned_containers", host.pid)[0]["containers"]}
        assert first.returncode == 0, first.stderr

        with LiveCommand(*start_watch) as second:
            records = second.wait_for(lambda rs: firing(rs, "orphaned_containers", host.pid),
                                      "the alert again after a restart", timeout=ALERT_TIMEOUT)
            again = firing(records, "orphaned_containers", host.pid)[0]
            assert leaked <= {c["id"] for c in again["containers"]}, second.stderr
            assert again["signature"] == f"docker run {image_name(docker_env.image)} node /pkg/bin/{SERVER}.js"
            second.proc.kill()  # a crash: nothing is cleaned up
        assert second.returncode == -signal.SIGKILL

        removed = sorted(leaked)[0]  # while no watch runs
        docker_env.cli("rm", "-f", removed)
        with LiveCommand(*start_watch) as third:
            records = third.wait_for(lambda rs: firing(rs, "orphaned_containers", host.pid),
                                     "the alert again after a crash", timeout=ALERT_TIMEOUT)
            listed = {c["id"] for c in firing(records, "orphaned_containers", host.pid)[0]["containers"]}
            assert leaked - {removed} <= listed and removed not in listed, third.stderr
            reported = {c["id"] for c in report_json(state_dir)["leaked_containers"]
                        if c["spawner"]["pid"] == host.pid}
            assert leaked - {removed} <= reported and removed not in reported
            select = ("--signature", again["signature"], "--spawner", str(host.pid), "--state-dir", state_dir)
            ended = set(reap(*select, "--yes")["ended"])
            assert leaked - {removed} <= ended and removed not in ended
            assert not ended & containers_of(docker_env, label)
    finally:
        if host is not None:
            stop_host(host)
