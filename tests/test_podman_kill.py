"""reap's kill of a Podman container against Podman 4.3's own answers, recorded from
`podman system service` on this machine (tests/fixtures/podman-4.3-kill.json), and the
engine it asks: rootful Podman's, never another that would answer "no such container".

Podman's Docker-compatible kill of SIGKILL waits for the container to exit, as Docker's
does; when a `--rm` container's cleanup removes it before that wait looks, Podman answers
the kill it delivered with 500 "no such container".  Podman cannot be made to lose that
race on demand (one kill in 15 on a loaded machine: run20 and CI at 35bbd75 called one of
8 containers reap ended "already gone"), so a server on a unix socket answers as Podman
did.  tests/test_podman_leaks.py ends real containers through the real endpoint."""

from __future__ import annotations

import json
import socketserver
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Iterator

import pytest

from spawnwatch.adapters.engine import Engines
from spawnwatch.reap import ContainerLeak, ListedContainer
from spawnwatch.reap.execute import end_containers

ANSWERS = json.loads((Path(__file__).resolve().parent / "fixtures" / "podman-4.3-kill.json").read_text())
CONTAINER = ANSWERS["inspect"]["Id"]
COMPAT_KILL = f"/v1.41/containers/{CONTAINER}/kill"
LIBPOD_KILL = f"/v1.41/libpod/containers/{CONTAINER}/kill"
INSPECT = f"/v1.41/containers/{CONTAINER}/json"


class RecordedPodman(socketserver.ThreadingUnixStreamServer):
    """Podman's recorded answers for one running `--rm` container, which either kill ends
    and its cleanup removes at once; the compatible kill answers as when the cleanup won."""

    daemon_threads = True

    def __init__(self, path: Path, libpod_kill: dict, info: dict) -> None:
        self.libpod_kill = libpod_kill
        self.info = info
        self.removed = False
        self.asked: list[str] = []
        super().__init__(str(path), Answer)

    def answer(self, method: str, path: str) -> tuple[int, dict | None]:
        path = path.partition("?")[0]
        self.asked.append(f"{method} {path}")
        if path in ("/version", "/v1.41/version"):
            return 200, ANSWERS["version"]
        if path == "/v1.41/info":
            return 200, self.info
        if (method, path) == ("GET", INSPECT) and not self.removed:
            return 200, ANSWERS["inspect"]
        if (method, path) in (("POST", COMPAT_KILL), ("POST", LIBPOD_KILL)) and not self.removed:
            self.removed = True
            kill = ANSWERS["compat_kill_after_the_cleanup_won"] if path == COMPAT_KILL else self.libpod_kill
            return kill["status"], kill.get("body")
        gone = ANSWERS["no_such_container"]
        return gone["status"], gone["body"]


class Answer(BaseHTTPRequestHandler):
    server: RecordedPodman

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self._answer()

    def _answer(self) -> None:
        status, body = self.server.answer(self.command, self.path)
        payload = json.dumps(body).encode() if body is not None else b""
        self.send_response(status)
        if payload:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *_args: object) -> None:  # a unix socket's peer has no address to log
        pass


def serving(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, libpod_kill: dict,
            info: dict = ANSWERS["info"]) -> Iterator[RecordedPodman]:
    server = RecordedPodman(tmp_path / "podman.sock", libpod_kill, info)
    monkeypatch.setenv("CONTAINER_HOST", f"unix://{server.server_address}")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def podman(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RecordedPodman]:
    yield from serving(tmp_path, monkeypatch, ANSWERS["libpod_kill"])


@pytest.fixture
def podman_removing_before_the_kill(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RecordedPodman]:
    """The container removed between reap's look and its kill: Podman's own kill says so."""
    yield from serving(tmp_path, monkeypatch, ANSWERS["no_such_container"])


@pytest.fixture
def rootless_podman(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RecordedPodman]:
    """The recorded info with what rootless Podman adds to it (as rootless Docker does)."""
    info = {**ANSWERS["info"], "SecurityOptions": [*ANSWERS["info"]["SecurityOptions"], "name=rootless"]}
    yield from serving(tmp_path, monkeypatch, ANSWERS["no_such_container"], info)


def leak_of(listed: ListedContainer) -> ContainerLeak:
    spawner = {"pid": 4242, "ppid": 1, "argv": ["sh", "-c", "podman run -i --rm"], "comm": "sh", "start": None}
    return ContainerLeak("podman run localhost/spawnwatch-busybox sleep", spawner, None, (listed,), time.time())


LISTED = ListedContainer(CONTAINER, ANSWERS["inspect"]["Name"], ANSWERS["inspect"]["Config"]["Image"],
                         runtime="podman")


def test_a_podman_container_reap_killed_is_ended_though_its_cleanup_removed_it_at_once(podman) -> None:
    outcome = end_containers(leak_of(LISTED), Engines())
    assert (outcome.ended, outcome.gone, outcome.failed) == ([LISTED], [], []), podman.asked
    assert outcome.unremoved == [] and f"POST {LIBPOD_KILL}" in podman.asked, podman.asked


def test_a_podman_container_removed_before_the_kill_is_gone(podman_removing_before_the_kill) -> None:
    outcome = end_containers(leak_of(LISTED), Engines())
    assert (outcome.ended, outcome.gone, outcome.failed) == ([], [LISTED], []), podman_removing_before_the_kill.asked


def test_rootless_podman_is_not_asked_for_a_container_it_cannot_see(rootless_podman) -> None:
    outcome = end_containers(leak_of(LISTED), Engines())
    [(listed, why)] = outcome.failed
    assert listed == LISTED and outcome.gone == [] and outcome.ended == [], outcome
    assert "it is rootless Podman's" in why and "CONTAINER_HOST" in why, why
    assert not any(CONTAINER in asked for asked in rootless_podman.asked), rootless_podman.asked


@pytest.mark.docker
def test_a_docker_engine_at_container_host_is_not_taken_for_podman(docker_env, monkeypatch) -> None:
    """Docker's engine answers "no such container" for Podman's: never read as gone."""
    monkeypatch.setenv("CONTAINER_HOST", docker_env.host)
    outcome = end_containers(leak_of(LISTED), Engines())
    [(listed, why)] = outcome.failed
    assert listed == LISTED and outcome.gone == [] and outcome.ended == [], outcome
    assert "it is not Podman's (Engine" in why and "CONTAINER_HOST" in why, why
