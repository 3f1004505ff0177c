"""Podman's events file as spawnwatch follows it (adapters/podman_events.py): its lines as
lifecycle events of engine "podman", what a hostile line does (nothing), a link never
followed, a rotated file read again; and in the book, a podman client claims Podman's
containers and a docker client never does (synthetic streams)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import wait_for
from spawnwatch.adapters import podman_events
from spawnwatch.adapters.podman_events import MAX_LINE, EventsFile, PodmanEvents, decoded, podman_event, still_running
from spawnwatch.bounded import BoundedMap
from spawnwatch.events import ContainerEvent, replaced
from test_container_leaks import IMAGE, START, docker_run, firing, mcp_host
from workloads import run

BOOT = 1_700_000_000.0
ID = "e2" * 32


def line(status: str, container_id: str = ID, time: str = "2023-11-14T22:13:30.5Z", **extra) -> bytes:
    record = {"ID": container_id, "Image": "localhost/busybox:1", "Name": "sw-leak-1", "Status": status,
              "Time": time, "Type": "container", "Attributes": {"spawnwatch.test": "x"}, **extra}
    return json.dumps(record).encode()


def test_podmans_lifecycle_lines_are_the_books_events_of_engine_podman() -> None:
    events = [podman_event(decoded(line(status)), BOOT) for status in ("create", "init", "start", "died", "remove")]
    assert [e.action if e else None for e in events] == ["create", None, "start", "die", "destroy"]
    create = events[0]
    assert create == ContainerEvent(ts=pytest.approx(10.5), action="create", id=ID, name="sw-leak-1",
                                    image="localhost/busybox:1", labels=("spawnwatch.test=x",), engine="podman")
    assert podman_event(decoded(line("died", ContainerExitCode=137)), BOOT).exit_code == 137


@pytest.mark.parametrize("hostile", [
    b"not json", b"\xff\xfe", b"[]", b"null", json.dumps({"Type": "container", "Status": "create"}).encode(),
    line("create", container_id=7), line("create", time="yesterday"), line("create", time=None),
    line("create", Name=["x"]), line("start", Attributes={"k": "v" * 5000}), line("create", ContainerExitCode="x"),
    line("create", Status=["create"]), line("create", Type={"container": 1}), line("start", Attributes=[1]),
    b"[" * (MAX_LINE - 1),
], ids=["text", "binary", "list", "null", "no id", "id not a string", "odd time", "no time", "name a list",
        "long label", "odd exit code", "status a list", "type a map", "attributes a list", "nested deep"])
def test_a_hostile_line_is_skipped_or_bounded_never_raised(hostile: bytes) -> None:
    event = podman_event(decoded(hostile), BOOT)
    assert event is None or (isinstance(event.id, str) and isinstance(event.name, str) and event.exit_code == 0
                             and all(len(label) <= 1024 for label in event.labels))


def test_the_file_is_read_line_by_line_an_overlong_line_skipped_whole(tmp_path: Path) -> None:
    path = tmp_path / "events.log"
    path.write_bytes(line("create") + b"\n" + b"x" * (MAX_LINE * 3) + b"\n" + line("start"))
    events = EventsFile(str(path))
    assert events.open(backlog=1 << 20) is True  # a backlog larger than the file: all of it
    assert list(events.lines()) == [line("create")]  # the start's line is not whole yet
    with open(path, "ab") as f:
        f.write(b"\n")
    assert list(events.lines()) == [line("start")]
    events.close()


def test_a_link_in_place_of_the_file_is_never_followed(tmp_path: Path) -> None:
    target = tmp_path / "secret"
    target.write_bytes(line("create") + b"\n")
    (tmp_path / "events.log").symlink_to(target)
    assert EventsFile(str(tmp_path / "events.log")).open(backlog=1 << 20) is False


def test_containers_left_running_by_the_backlog_come_as_their_create_and_start() -> None:
    a, b, c = "a" * 64, "b" * 64, "c" * 64
    events = [podman_event(decoded(line(s, i)), BOOT) for s, i in [
        ("create", a), ("start", a), ("create", b), ("start", b), ("died", b), ("create", c), ("start", a)]]
    assert [(e.action, e.id) for e in still_running(events, BoundedMap(16))] == [("create", a), ("start", a)]


def test_the_backlogs_running_containers_past_the_limit_are_counted_evictions() -> None:
    a, b, c = "a" * 64, "b" * 64, "c" * 64
    events = [podman_event(decoded(line(s, i)), BOOT) for s, i in [
        ("create", a), ("start", a), ("create", b), ("start", b), ("create", c), ("start", c)]]
    running = BoundedMap(2)
    assert [(e.action, e.id) for e in still_running(events, running)] == [
        ("create", b), ("start", b), ("create", c), ("start", c)]
    assert running.evicted == 1 and not running


def test_the_follower_counts_the_backlogs_evictions_in_its_table(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(podman_events, "MAX_RUNNING", 1)
    path = tmp_path / "events.log"
    path.write_bytes(b"".join(line(status, i * 64) + b"\n" for i in "ab" for status in ("create", "start")))
    with PodmanEvents(str(path), poll_s=0.05) as follower:
        follower.queue_lifecycle(BOOT)
        wait_for(follower.following.is_set, "the backlog read")
        assert [(e.action, e.id[0]) for e in follower.lifecycle()] == [("create", "b"), ("start", "b")]
        assert follower.evicted_by_table() == {"podman_backlog_containers": 1}  # the session's stats take it


@pytest.mark.root
def test_the_follower_reads_appended_lines_and_a_rotated_file_again(tmp_path: Path) -> None:
    path = tmp_path / "events.log"
    path.write_bytes(line("create", "a" * 64) + b"\n" + line("start", "a" * 64) + b"\n")
    seen: list[ContainerEvent] = []
    with PodmanEvents(str(path), poll_s=0.05) as follower:
        follower.queue_lifecycle(BOOT)
        wait_for(lambda: seen.extend(follower.lifecycle()) or len(seen) >= 2, "the backlog's running container")
        with open(path, "ab") as f:  # a hostile line first: skipped, the follower reads on
            f.write(b'{"Type": "container", "Status": ["create"]}\n\xff\n' + line("died", "a" * 64) + b"\n")
        wait_for(lambda: seen.extend(follower.lifecycle()) or len(seen) >= 3, "the appended died")
        rotated = tmp_path / "rotated"
        rotated.write_bytes(line("died", "a" * 64) + b"\n"  # read before: skipped
                            + line("create", "b" * 64, time="2023-11-14T22:13:31Z") + b"\n")
        os.replace(rotated, path)
        wait_for(lambda: seen.extend(follower.lifecycle()) or len(seen) >= 4, "the rotated file's create")
    assert [(e.action, e.id[0]) for e in seen] == [("create", "a"), ("start", "a"), ("die", "a"), ("create", "b")]


def podman_host(engine: str) -> object:
    """mcp_host's leak with `podman run` clients, the containers told by the engine `engine`."""
    stream = mcp_host("orphan")
    stream.events = [
        replaced(e, engine=engine) if isinstance(e, ContainerEvent)
        else replaced(e, argv=("podman", *e.argv[1:])) if getattr(e, "argv", ())[:1] == ("docker",) else e
        for e in stream.events]
    return stream


def test_podman_clients_killed_by_their_host_leave_podmans_containers_charged_to_it() -> None:
    [(_, alert)] = firing(run(podman_host("podman"), until=START + 40), "orphaned_containers")[:1]
    assert alert.orphans >= 8 and alert.signature.startswith("podman run ")
    assert all(c["runtime"] == "podman" and c["image"] == IMAGE and not c["ambiguous"] for c in alert.containers)


def test_a_podman_client_never_claims_a_docker_container_nor_a_docker_client_a_podman_one() -> None:
    assert not firing(run(podman_host(""), until=START + 40), "orphaned_containers")
    stream = mcp_host("orphan")
    stream.events = [replaced(e, engine="podman") if isinstance(e, ContainerEvent) else e for e in stream.events]
    assert docker_run()[0] == "docker" and not firing(run(stream, until=START + 40), "orphaned_containers")


def test_reap_asks_podmans_api_for_podmans_containers_and_fails_plainly_without_it(tmp_path, monkeypatch) -> None:
    """Not Docker's engine (which would answer "no such container": gone), and no service
    running is a failure that says where Podman's API was looked for."""
    import subprocess

    from click.testing import CliRunner

    from ledgers import alert_container, keep_ledger
    from spawnwatch.cli.reap import command as reap_command

    socket = f"unix://{tmp_path}/no-podman.sock"
    monkeypatch.setenv("CONTAINER_HOST", socket)
    host = subprocess.Popen(["sleep", "1000"])
    kept = keep_ledger(str(tmp_path / "state"), host, [alert_container(ID, runtime="podman")],
                       "podman run <image> sleep <n>")
    try:
        result = CliRunner().invoke(reap_command, ["--signature", "podman run <image> sleep <n>", "--spawner",
                                                   str(host.pid), "--state-dir", str(tmp_path / "state"), "--json"])
        assert result.exit_code == 1, result.output
        record = json.loads(result.stdout.splitlines()[0])
        (container,) = record["containers"]
        assert container["id"] == ID
        assert container["unknown"].startswith("the engine could not be reached: no Podman API")
        assert socket in container["unknown"] and "podman system service" in container["unknown"]
    finally:
        kept.close()
        host.kill()
        host.wait()
