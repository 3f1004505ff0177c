"""Containers that exited `docker run` clients left running, as the ledger of `watch` lists
them: `report` shows them with their host process and recommends the `reap` that ends
them (pure, from facts); `reap` picks one host's alert, refuses what the gate refuses,
and on a real engine ends exactly the listed containers."""

from __future__ import annotations

import json
import shlex
import subprocess
from dataclasses import replace

import pytest
from click.testing import CliRunner

from conftest import wait_for
from ledgers import DOCKER_SIGNATURE, alert_container, keep_ledger
from spawnwatch.adapters.engine import ContainerInfo
from spawnwatch.cli.reap import command as reap_command
from spawnwatch.cli.report import command as report_command
from spawnwatch.config import load
from spawnwatch.reap import AMBIGUOUS, ContainerLeak, ListedContainer, Selection, SelectionError, container_leaks, pick, recheck
from spawnwatch.reap import container_refusal as refusal
from spawnwatch.report import LeakedContainerFacts, LedgerFacts, build, render
from spawnwatch.runner import ready_record
from spawnwatch.signature import Signer
from spawnwatch.sinks.ledger import Ledger
from test_report import CONTAINER_ID, MIB, facts

SIGNER = Signer(load().signature)
HOST = {"pid": 4242, "ppid": 1, "argv": ["node", "/opt/mcp/host.js", "--stdio"], "comm": "node"}
SIGNATURE = "docker run mcp/github stdio"


def sign(p) -> str:
    return SIGNER(p.argv, p.comm)


def leaked(number: int, spawner: dict = HOST, signature: str = SIGNATURE) -> LeakedContainerFacts:
    info = ContainerInfo(id=f"{number:x}" * 64, name=f"brave_{number}", image="mcp/github", running=True)
    return LeakedContainerFacts(signature, spawner, info, memory_bytes=100 * MIB, age_s=3600.0 * number)


def with_leaks(*containers: LeakedContainerFacts, state_dir: str = "/var/lib/spawnwatch"):
    return replace(facts(), ledger=LedgerFacts(f"{state_dir}/alerts.json", 900), leaked_containers=containers)


def test_the_report_lists_leaked_containers_with_their_host_and_the_reap_that_ends_them() -> None:
    report = build(with_leaks(leaked(1), leaked(2)))
    assert report["ledger"] == {"path": "/var/lib/spawnwatch/alerts.json", "writer_pid": 900, "unusable": None}
    assert [(c["id"], c["name"], c["image"], c["memory_bytes"], c["age_s"]) for c in report["leaked_containers"]] == [
        ("1" * 64, "brave_1", "mcp/github", 100 * MIB, 3600.0), ("2" * 64, "brave_2", "mcp/github", 100 * MIB, 7200.0),
    ]
    assert all(c["signature"] == SIGNATURE and c["spawner"] == HOST for c in report["leaked_containers"])
    (action,) = [a for a in report["actions"] if a["kind"] == "reap" and "docker" in a["command"]]
    assert shlex.split(action["command"]) == ["spawnwatch", "reap", "--signature", SIGNATURE, "--spawner", "4242"]
    assert "the 2 containers" in action["message"] and "200.0 MiB" in action["message"]

    text = render(report)
    section = text[text.index("LEAKED CONTAINERS"):text.index("DOCKER DISK")].splitlines()
    assert section[0] == "LEAKED CONTAINERS  (ledger /var/lib/spawnwatch/alerts.json of `watch` pid 900)"
    assert section[1].split() == [*SIGNATURE.split(), "x2", "200.0", "MiB", "by", "node", "(4242)"]
    assert section[2].strip() == "host process: node /opt/mcp/host.js --stdio"
    assert section[3].split() == ["1" * 12, "brave_1", "mcp/github", "1.0h", "100.0", "MiB"]
    assert f"spawnwatch reap --signature '{SIGNATURE}' --spawner 4242" in text


def test_one_reap_per_host_and_signature_none_for_init_and_the_state_dir_when_not_the_default() -> None:
    other = {**HOST, "pid": 5000}
    init = {**HOST, "pid": 1, "comm": "systemd"}
    report = build(with_leaks(leaked(1), leaked(2, other), leaked(3, other), leaked(4, init), state_dir="/tmp/sw"))
    commands = [shlex.split(a["command"]) for a in report["actions"] if a["kind"] == "reap" and "docker" in a["command"]]
    assert commands == [
        ["spawnwatch", "reap", "--signature", SIGNATURE, "--spawner", spawner, "--state-dir", "/tmp/sw"]
        for spawner in ("4242", "5000")
    ]


def test_a_leaked_container_is_to_be_ended_not_given_limits() -> None:
    assert "mcp-1" in [a.get("container") for a in build(facts())["actions"]]
    mcp = replace(leaked(1), info=ContainerInfo(id=CONTAINER_ID, name="mcp-1", running=True))
    assert "mcp-1" not in [a.get("container") for a in build(with_leaks(mcp))["actions"]]


def test_without_a_usable_ledger_the_report_says_how_to_get_one() -> None:
    start = "start `spawnwatch watch` (or the service) to see containers leaked by exited clients"
    report = build(facts())
    assert report["ledger"] is None and report["leaked_containers"] == []
    assert f"LEAKED CONTAINERS  no ledger of `watch` here: {start}" in render(report).splitlines()
    stale = replace(facts(), ledger=LedgerFacts("/var/lib/spawnwatch/alerts.json", 900, "its `watch` (pid 900) has ended"))
    assert (f"LEAKED CONTAINERS  the ledger /var/lib/spawnwatch/alerts.json cannot be used: its `watch` (pid 900) has "
            f"ended; {start}") in render(build(stale)).splitlines()
    assert "LEAKED CONTAINERS  none (ledger /var/lib/spawnwatch/alerts.json of `watch` pid 900)" in render(build(with_leaks()))


def leak(spawner: int = 4242, signature: str = SIGNATURE, container: dict | None = None) -> ContainerLeak:
    return ContainerLeak(signature, {**HOST, "pid": spawner, "start": 10.0}, container,
                         (ListedContainer("a" * 64, "brave_a", "mcp/github"),), listed_at=1000.0)


def test_a_selection_picks_one_hosts_alert() -> None:
    leaks = [leak(4242), leak(5000), leak(6000, "docker run mcp/other"), leak(7000, container={"id": "c0ffee" * 10})]
    assert pick(leaks, Selection(SIGNATURE, spawner=5000), sign).spawner_pid == 5000
    assert pick(leaks, Selection("docker run mcp/other"), sign).spawner_pid == 6000
    assert pick(leaks, Selection(SIGNATURE, container="c0ffee"), sign).spawner_pid == 7000
    assert pick(leaks, Selection(SIGNATURE, spawner=9999), sign) is None
    with pytest.raises(SelectionError, match="several hosts' leaked containers; pick one: --spawner 4242"):
        pick(leaks, Selection(SIGNATURE), sign)


def test_the_ledgers_orphaned_containers_alerts_are_read_and_others_left() -> None:
    alert = {"rule": "orphaned_containers", "signature": SIGNATURE, "spawner": {**HOST, "start": 5.0},
             "container": None, "listed_at": 1000, "containers": [{"id": "b" * 64, "name": "x", "image": "i"}]}
    (found,) = container_leaks([alert, {**alert, "rule": "orphaned"}])
    assert found.containers == (ListedContainer("b" * 64, "x", "i"),) and found.listed_at == 1000.0


def test_the_gate_for_containers() -> None:
    assert refusal(leak(), None, True, {77}, False) is None
    assert "pid 1 (init)" in refusal(leak(1), None, True, set(), True)
    assert "runs this very command" in refusal(leak(77), None, True, {77}, True)
    stale = refusal(leak(), "its `watch` (pid 9) has ended", True, set(), False)
    assert stale.startswith("the ledger is stale (its `watch` (pid 9) has ended)") and "--force" in stale
    assert "no longer the process the alert named" in refusal(leak(), None, False, set(), False)
    assert refusal(leak(), "its `watch` (pid 9) has ended", False, set(), True) is None


def test_each_container_is_checked_again_before_it_is_ended() -> None:
    listed = ListedContainer("a" * 64, "brave_a", "mcp/github")
    info = ContainerInfo(id="a" * 64, name="brave_a", running=True, created=999.5)
    assert recheck(listed, info, listed_at=1000.0) is None
    assert recheck(listed, replace(info, created=1000.5), 1000.0) == "created after the alert listed it"
    assert recheck(listed, replace(info, created=None), 1000.0) == "the engine does not say when it was created"
    assert "another container" in recheck(listed, replace(info, id="a" * 12 + "b" * 52), 1000.0)


# --- a real engine -----------------------------------------------------------------------------


def invoke(cmd, *args: str, code: int = 0) -> dict:
    result = CliRunner().invoke(cmd, [*args, "--json"], catch_exceptions=False)
    assert result.exit_code == code, result.output
    return json.loads(result.stdout) if code == 0 else result.output


def reap_selection(spawner: subprocess.Popen, state_dir: str) -> list[str]:
    """`reap`'s options for the containers the ledger in `state_dir` lists as `spawner`'s."""
    return ["--signature", DOCKER_SIGNATURE, "--spawner", str(spawner.pid), "--state-dir", state_dir]


def running(docker_env, container_id: str) -> bool:
    return docker_env.cli("inspect", "-f", "{{.State.Running}}", container_id, check=False) == "true"


@pytest.mark.docker
@pytest.mark.root
def test_reap_ends_exactly_the_containers_the_ledger_lists(docker_env, spawner, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", docker_env.host)
    listed = [docker_env.run("sleep", "1000"), docker_env.run("sleep", "1000", options=("--rm",))]
    unlisted = docker_env.run("sleep", "1000")
    state_dir = str(tmp_path / "state")
    kept = keep_ledger(state_dir, spawner, [alert_container(c) for c in listed])
    select = reap_selection(spawner, state_dir)
    try:
        dry = invoke(reap_command, *select)
        assert dry["dry_run"] and dry["refused"] is None and "ended" not in dry
        assert [c["id"] for c in dry["containers"]] == listed
        assert all(c["running"] and c["memory_bytes"] > 0 and c["age_s"] >= 0 for c in dry["containers"])
        assert all(running(docker_env, c) for c in [*listed, unlisted])

        report = invoke(report_command, "--state-dir", state_dir)
        assert sorted(c["id"] for c in report["leaked_containers"]) == sorted(listed)
        assert all(c["spawner"]["pid"] == spawner.pid and c["memory_bytes"] > 0 for c in report["leaked_containers"])
        (action,) = [a for a in report["actions"] if a["kind"] == "reap" and f"--spawner {spawner.pid}" in a["command"]]

        ended = invoke(reap_command, *shlex.split(action["command"])[2:], "--yes")
        assert sorted(ended["ended"]) == sorted(listed) and ended["memory_freed_bytes"] > 0
        assert (ended["gone"], ended["skipped"], ended["failed"], ended["unremoved"]) == ([], [], [], [])
        for container_id in listed:  # removed: by reap, and by the engine for the --rm one
            wait_for(lambda: docker_env.cli("ps", "-aq", "--no-trunc", "--filter", f"id={container_id}") == "",
                     f"{container_id[:12]} removed", deadline=60.0)
        assert running(docker_env, unlisted)
        again = invoke(reap_command, *select, "--yes")
        assert again["ended"] == [] and sorted(again["gone"]) == sorted(listed)
    finally:
        kept.close()


@pytest.mark.docker
@pytest.mark.root
def test_reap_refuses_a_stale_ledger_and_a_spawner_that_is_gone(docker_env, spawner, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", docker_env.host)
    leaked_container = docker_env.run("sleep", "1000")
    ended_watch = subprocess.Popen(["sleep", "1000"])
    writer = {**ready_record(), "pid": ended_watch.pid}
    state_dir = str(tmp_path / "state")
    select = reap_selection(spawner, state_dir)
    kept = keep_ledger(state_dir, spawner, [alert_container(leaked_container)], writer=writer)
    try:
        ended_watch.kill()
        ended_watch.wait()
        assert invoke(reap_command, *select)["refused"].startswith("the ledger is stale")
        out = invoke(reap_command, *select, "--yes", code=1)
        assert f"refused: the ledger is stale (its `watch` (pid {ended_watch.pid}) has ended)" in out
        report = invoke(report_command, "--state-dir", state_dir)
        assert report["leaked_containers"] == [] and "has ended" in report["ledger"]["unusable"]

        kept.close()
        # A live watch's ledger, but the host has ended.
        kept = keep_ledger(state_dir, spawner, [alert_container(leaked_container)])
        spawner.kill()
        spawner.wait()
        out = invoke(reap_command, *select, "--yes", code=1)
        assert f"refused: pid {spawner.pid} is no longer the process the alert named" in out
        assert running(docker_env, leaked_container)
        forced = invoke(reap_command, *select, "--yes", "--force")
        assert forced["ended"] == [leaked_container] and not running(docker_env, leaked_container)
    finally:
        kept.close()
        ended_watch.kill()
        ended_watch.wait()


@pytest.mark.docker
@pytest.mark.root
def test_with_the_engine_unreachable_nothing_reads_as_gone_and_reap_fails(docker_env, spawner, tmp_path,
                                                                          monkeypatch) -> None:
    leaked_container = docker_env.run("sleep", "1000")
    state_dir = str(tmp_path / "state")
    kept = keep_ledger(state_dir, spawner, [alert_container(leaked_container)])
    select = reap_selection(spawner, state_dir)
    # An engine socket nobody listens on: the engine is down, or DOCKER_HOST points elsewhere.
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    try:
        result = CliRunner().invoke(reap_command, [*select, "--yes", "--json"])
        assert result.exit_code == 1, result.output
        record = json.loads(result.stdout.splitlines()[0])
        assert record["ended"] == [] and record["gone"] == []
        ((failed),) = record["failed"]
        assert failed["id"] == leaked_container and failed["reason"].startswith("the engine could not be reached")
        result = CliRunner().invoke(reap_command, select)
        assert result.exit_code == 1
        assert "unknown: the engine could not be reached" in result.output and "(not running)" not in result.output
        assert running(docker_env, leaked_container)
    finally:
        kept.close()


@pytest.mark.docker
@pytest.mark.root
def test_a_container_whose_link_to_its_client_is_ambiguous_is_left_out(docker_env, spawner, tmp_path,
                                                                       monkeypatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", docker_env.host)
    linked, ambiguous = docker_env.run("sleep", "1000"), docker_env.run("sleep", "1000")
    state_dir = str(tmp_path / "state")
    kept = keep_ledger(state_dir, spawner, [alert_container(linked), alert_container(ambiguous, ambiguous=True)])
    select = reap_selection(spawner, state_dir)
    try:
        dry = invoke(reap_command, *select)
        assert [c["left_out"] for c in dry["containers"]] == [None, AMBIGUOUS]
        ended = invoke(reap_command, *select, "--yes")
        assert ended["ended"] == [linked] and ended["skipped"] == [{"id": ambiguous, "reason": AMBIGUOUS}]
        assert running(docker_env, ambiguous)
    finally:
        kept.close()


def test_a_docker_signature_matching_nothing_says_where_leaked_containers_come_from(tmp_path) -> None:
    out = invoke(reap_command, "--signature", "docker run nothing/here", "--state-dir", str(tmp_path), code=1)
    assert "no process with signature 'docker run nothing/here' matches" in out
    assert "known only to a running `watch`: no ledger of one here" in out
    kept = Ledger(str(tmp_path))
    kept.send(ready_record())
    try:
        out = invoke(reap_command, "--signature", "docker run nothing/here", "--state-dir", str(tmp_path), code=1)
        assert f"nor does a firing orphaned_containers alert in the ledger {tmp_path}/alerts.json" in out
    finally:
        kept.close()
