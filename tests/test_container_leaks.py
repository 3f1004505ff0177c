"""orphaned_containers and the container book on synthetic streams: `docker run` clients a
host execs, joined to the engine's container events (the same shapes run for real in
test_docker_clients.py); and clients and containers already there when the session began
(the snapshot's clients, the containers found running after it)."""

from __future__ import annotations

import dataclasses
import itertools
import json

from click.testing import CliRunner

from spawnwatch.cli import main
from spawnwatch.config import load
from spawnwatch.detect.containers import MAX_PENDING_CLIENTS, Link, same_image
import pytest

from spawnwatch.events import ContainerEvent, Exec, Fork, Resync, Snapshot, from_record, replaced, to_record
from spawnwatch.pipeline import Pipeline
from streams import BOOT_OFFSET, INIT, SHELL, Stream, host, info, snapshot
from workloads import SUPERVISOR_PID, Schedule, run

IMAGE = "ghcr.io/github/github-mcp-server:1.2"
SIGNATURE = "docker run ghcr.io/github/github-mcp-server stdio"
START = 10.0


def docker_run(*options: str, image: str = IMAGE) -> tuple[str, ...]:
    return ("docker", "run", "-i", "--rm", "-e", "GITHUB_PERSONAL_ACCESS_TOKEN", *options, image, "stdio")


def mcp_host(mode: str = "orphan", count: int = 15, interval: float = 1.5, session: float = 1.0,
             labels: dict | None = None, wrap: bool = False, engine_lag: float = 0.3, detached: bool = False,
             options: tuple[str, ...] = ()) -> Stream:
    """A host starting a `docker run -i` server every `interval`; in orphan mode it SIGKILLs
    each client after `session`, the container living on; in stop mode it stops the
    container itself (`docker stop`), the client exiting after the container's die."""
    plan = Schedule(Stream(t=START))
    s = plan.stream
    for i in range(count):
        box: dict[str, int] = {}
        container_id = f"{i + 1:02x}" * 32
        t = START + i * interval

        def start(box=box) -> None:
            if wrap:
                box["sh"] = s.spawn(SUPERVISOR_PID, "sh", "-c", " ".join(docker_run(*options)))
                box["client"] = s.spawn(box["sh"], *docker_run(*options))
            else:
                box["client"] = s.spawn(SUPERVISOR_PID, *docker_run(*options))

        def created(container_id=container_id, i=i) -> None:
            fields = dict(name=f"sleepy_{i}", image=IMAGE, compose_project=(labels or {}).get("project", ""))
            s.container("create", container_id, **fields)
            s.container("start", container_id, **fields, detached=detached)

        def kill_client(box=box) -> None:
            for key in ("client", "sh"):
                if key in box:
                    s.exit(box[key])
                    s.reap(box[key])

        def stop_container(box=box, container_id=container_id) -> None:
            s.container("die", container_id, name="x", image=IMAGE, exit_code=143)
            s.container("destroy", container_id, name="x", image=IMAGE)

        plan.at(t, start)
        plan.at(t + engine_lag, created)
        if mode == "orphan":
            plan.at(t + engine_lag + session, kill_client)
        elif mode == "stop":
            plan.at(t + engine_lag + session, stop_container)
            plan.at(t + engine_lag + session + 0.05, kill_client)
    return plan.run()


def firing(alerts, rule=None):
    return [(t, a) for t, a in alerts if a.state == "firing" and (rule is None or a.rule == rule)]


def test_containers_left_by_killed_clients_are_charged_to_the_host_within_25_s():
    alerts = run(mcp_host("orphan"), until=START + 40)
    [(t, alert)] = firing(alerts, "orphaned_containers")[:1]
    assert t - START <= 25
    assert alert.spawner["pid"] == SUPERVISOR_PID
    assert alert.signature == SIGNATURE
    assert alert.orphans == len(alert.containers) >= 8
    assert alert.containers[0] == {"id": "01" * 32, "name": "sleepy_0", "image": IMAGE, "memory_bytes": None,
                                   "runtime": "docker", "ambiguous": False}
    assert IMAGE in alert.message and f"{alert.orphans} containers" in alert.message
    assert "leaves running the containers of" in alert.message
    record = alert.to_record()
    assert record["rule"] == "orphaned_containers" and record["containers"] == [dict(c) for c in alert.containers]
    assert {a.rule for _, a in firing(alerts)} == {"orphaned_containers"}


def test_a_host_keeping_its_clients_is_accumulating_with_a_docker_run_signature():
    alerts = run(mcp_host("keep"), until=START + 40)
    t, alert = firing(alerts)[0]
    assert alert.rule == "accumulating" and alert.signature == SIGNATURE and t - START <= 20
    assert not firing(alerts, "orphaned_containers")


def test_a_wrapper_shell_killed_with_its_client_still_charges_the_host():
    alerts = run(mcp_host("orphan", wrap=True), until=START + 40)
    [(_, alert)] = firing(alerts, "orphaned_containers")[:1]
    assert alert.spawner["pid"] == SUPERVISOR_PID
    assert alert.signature == f"sh -c {SIGNATURE}"


def test_engine_events_arriving_before_the_clients_exec_are_joined_all_the_same():
    stream = mcp_host("orphan")
    # The engine's events sorted before every process event of the same second.
    stream.events.sort(key=lambda e: (round(e.ts), not isinstance(e, ContainerEvent)))
    assert firing(run(stream, until=START + 40), "orphaned_containers")


def test_named_clients_are_joined_by_name_not_image():
    stream = mcp_host("orphan", options=("--name", "sleepy_7"), count=1)
    pipeline = Pipeline(load())
    for event in stream.events:
        pipeline.feed(event)
    book = pipeline.detector.containers
    assert book.containers["01" * 32].client is None  # sleepy_0 is not the container sleepy_7 asked for


def test_healthy_container_starts_raise_nothing():
    assert run(mcp_host("stop"), until=START + 40) == []  # the host stops its containers itself
    assert run(mcp_host("orphan", labels={"project": "x"}), until=START + 40) == []  # compose's
    assert run(mcp_host("orphan", detached=True), until=START + 40) == []  # the engine says -d


def test_detached_containers_of_a_script_that_exits_raise_nothing():
    s = Stream(t=START)
    script = s.spawn(SUPERVISOR_PID, "sh", "start-all.sh")
    for i in range(12):
        s.at(START + i)
        client = s.spawn(script, "docker", "run", "-d", "--network", "none", "busybox", "sleep", "300")
        s.container("create", f"{i + 1:02x}" * 32, name=f"d{i}", image="busybox")
        s.container("start", f"{i + 1:02x}" * 32, name=f"d{i}", image="busybox")
        s.end(client)
    s.end(script)
    assert run(s, until=START + 60) == []


def test_create_then_start_attached_is_leaked_and_start_detached_is_not():
    def create_and_start(*start_options: str) -> Stream:
        s = Stream(t=START)
        for i in range(10):
            s.at(START + 1.5 * i)
            name = f"srv-{i}"
            s.end(s.spawn(SUPERVISOR_PID, "docker", "create", "-i", "--name", name, IMAGE, "stdio"))
            s.container("create", f"{i + 1:02x}" * 32, name=name, image=IMAGE)
            client = s.spawn(SUPERVISOR_PID, "docker", "start", *start_options, name)
            s.container("start", f"{i + 1:02x}" * 32, name=name, image=IMAGE)
            s.at(START + 1.5 * i + 1)
            s.exit(client)
            s.reap(client)
        return s

    [(_, alert)] = firing(run(create_and_start("-a", "-i"), until=START + 40), "orphaned_containers")[:1]
    assert alert.signature == "docker start srv-<n>" and alert.orphans >= 8
    assert run(create_and_start(), until=START + 40) == []


def test_the_alert_resolves_when_the_containers_are_removed():
    stream = mcp_host("orphan", count=10)
    stream.at(stream.t + 5)
    for i in range(10):
        stream.container("die", f"{i + 1:02x}" * 32)
    states = [a.state for _, a in run(stream) if a.rule == "orphaned_containers"]
    assert states == ["firing", "resolved"]


def test_container_events_replay_from_their_records():
    stream = mcp_host("orphan")
    records = [to_record(e) for e in stream.events if isinstance(e, ContainerEvent)]
    assert records[0] == {"kind": "container", "ts": records[0]["ts"], "action": "create", "id": "01" * 32,
                          "name": "sleepy_0", "image": IMAGE, "compose_project": "", "exit_code": 0, "detached": False,
                          "labels": [], "engine": ""}
    assert [from_record(r) for r in records] == [e for e in stream.events if isinstance(e, ContainerEvent)]


def test_memory_of_leaked_containers_comes_from_the_injected_reader():
    pipeline = Pipeline(load(), container_memory=lambda container_id: 1 << 20)
    alerts = pipeline.feed(host())
    for event in mcp_host("orphan").events:
        alerts += pipeline.feed(event)
    alerts += pipeline.evaluate(pipeline.now + 30)
    alert = next(a for a in alerts if a.rule == "orphaned_containers")
    assert all(c["memory_bytes"] == 1 << 20 for c in alert.containers)
    assert alert.rss_bytes == alert.orphans << 20


def test_pending_clients_are_bounded_and_expire():
    s = Stream(t=START)
    for i in range(MAX_PENDING_CLIENTS + 10):
        s.spawn(SUPERVISOR_PID, *docker_run())
    pipeline = Pipeline(load())
    for event in s.events:
        pipeline.feed(event)
    book = pipeline.detector.containers
    assert book.counts["container_clients_dropped"] == 10
    assert pipeline.counts()["container_clients_dropped"] == 10  # the table's bookkeeping: the summary, the metrics
    pipeline.evaluate(pipeline.now + 1000)
    assert book.counts["container_clients_unmatched"] == MAX_PENDING_CLIENTS


def test_images_match_as_the_engine_names_them():
    assert same_image("busybox", "busybox:latest")
    assert same_image("busybox", "docker.io/library/busybox")
    assert not same_image("busybox:1.36", "busybox:latest")
    assert not same_image("ghcr.io/a/b", "ghcr.io/a/c")


def test_the_rule_thresholds_come_from_the_config(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text("[rules.orphaned_containers]\nmin_containers = 30\n")
    config = load(path)
    assert config.detect.orphaned_containers.min_containers == 30
    assert not firing(run(mcp_host("orphan", count=20), until=START + 50, config=config))


# --- clients of other engines, and links another client could have made ---------------------

KEEPER_PID = 210  # another host, whose clients of the local engine stay
KEEPER = info(KEEPER_PID, 100, 2.0, "node", "keeper.js")


def beside_a_keeper(argv: tuple[str, ...], environ: tuple[str, ...] = (), environ_unread: bool = False,
                    count: int = 16, keeper_options: tuple[str, ...] = (), labels: tuple[str, ...] = ()) -> list:
    """The supervisor's clients running `argv` (with `environ`), each killed 2 s after its
    start; 0.1 s after each, a client of the keeper asks the local engine for a container of
    the same image, created 0.3 s later and in use as long as the test runs."""
    s = Stream(t=START)
    for i in range(count):
        s.at(START + 3 * i)
        client = s.spawn(SUPERVISOR_PID, *argv)
        exec_at = max(i for i, e in enumerate(s.events) if isinstance(e, Exec) and e.pid == client)
        s.events[exec_at] = replaced(s.events[exec_at], environ=environ, environ_unread=environ_unread)
        s.at(START + 3 * i + 0.1)
        s.spawn(KEEPER_PID, *docker_run(*keeper_options))
        s.at(START + 3 * i + 0.4)
        fields = dict(name=f"kept_{i}", image=IMAGE, labels=labels)
        s.container("create", f"{i + 1:02x}" * 32, **fields)
        s.container("start", f"{i + 1:02x}" * 32, **fields)
        s.at(START + 3 * i + 2)
        s.exit(client)
        s.reap(client)
    return s.events


def judged(events: list) -> tuple[Pipeline, list]:
    pipeline = Pipeline(load())
    alerts = pipeline.feed(host(5.0, KEEPER))
    for event in events:
        alerts += pipeline.feed(event)
    return pipeline, alerts + pipeline.evaluate(pipeline.now + 20)


@pytest.mark.parametrize("argv, environ", [
    (("docker", "-H", "ssh://other", *docker_run()[1:]), ()),
    (("docker", "--host=unix:///run/sw-second.sock", *docker_run()[1:]), ()),
    (("docker", "-H", "tcp://10.0.0.2:2375", "container", *docker_run()[1:]), ("DOCKER_HOST=unix:///var/run/docker.sock",)),
    (docker_run(), ("DOCKER_HOST=unix:///run/sw-second.sock",)),
    (("podman", *docker_run()[1:]), ()),
], ids=["-H ssh", "--host=unix", "-H over DOCKER_HOST", "DOCKER_HOST", "podman"])
def test_a_client_of_another_engine_is_never_charged_a_local_container(argv, environ):
    pipeline, alerts = judged(beside_a_keeper(argv, environ))
    assert not [a for a in alerts if a.rule == "orphaned_containers"]
    clients = {c.client.ppid for c in pipeline.detector.containers.containers.values()}
    assert clients == {KEEPER_PID}  # each container to the keeper's client that asked for it


@pytest.mark.parametrize("options, environ", [
    (("-H", "unix:///run/docker.sock"), ()),
    ((), ("DOCKER_HOST=unix:///var/run/../run/docker.sock",)),
    (("--context", "default"), ("DOCKER_CONTEXT=remote",)),
], ids=["-H the local socket", "DOCKER_HOST the local socket", "--context default"])
def test_a_client_of_the_local_engine_named_any_way_still_claims_its_containers(options, environ):
    stream = mcp_host("orphan")
    stream.events = [replaced(e, argv=(e.argv[0], *options, *e.argv[1:]), environ=environ)
                     if isinstance(e, Exec) and e.argv[:1] == ("docker",) else e for e in stream.events]
    [(_, alert)] = firing(run(stream, until=START + 40), "orphaned_containers")[:1]
    assert alert.orphans >= 8 and not any(c["ambiguous"] for c in alert.containers)


@pytest.mark.parametrize("argv, environ, unread", [
    (("docker", "--context", "remote", *docker_run()[1:]), (), False),
    (docker_run(), ("DOCKER_CONTEXT=remote",), False),
    (docker_run(), (), True),
], ids=["--context", "DOCKER_CONTEXT", "environ unread"])
def test_a_client_whose_engine_cannot_be_told_leaves_its_containers_ambiguous(argv, environ, unread):
    _, alerts = judged(beside_a_keeper(argv, environ, unread))
    [alert, *_] = [a for a in alerts if a.rule == "orphaned_containers"]
    assert alert.spawner["pid"] == SUPERVISOR_PID
    assert alert.containers and all(c["ambiguous"] for c in alert.containers)
    assert "may be another client's" in alert.message and "reap leaves those" in alert.message


def test_a_container_a_live_rival_could_have_made_is_ambiguous():
    """Both clients of the local engine wait for a container of the one image; the
    supervisor's, older, claims the first created: the keeper's (alive) may be its maker."""
    _, alerts = judged(beside_a_keeper(docker_run()))
    [alert, *_] = [a for a in alerts if a.rule == "orphaned_containers"]
    assert all(c["ambiguous"] for c in alert.containers)


def test_a_client_is_never_joined_to_a_container_without_the_labels_it_gave():
    pipeline, alerts = judged(beside_a_keeper(docker_run("--label", "role=host"), keeper_options=("-l", "role=keeper"),
                                              labels=("role=keeper", "spawnwatch=1")))
    assert not [a for a in alerts if a.rule == "orphaned_containers"]
    clients = {c.client.ppid for c in pipeline.detector.containers.containers.values()}
    assert clients == {KEEPER_PID}  # each container to the keeper's client that asked for it


def test_a_label_redaction_replaced_is_not_asked_of_the_container():
    signer = Pipeline(load()).signer
    client = signer.container_client(docker_run("--label", "token=<redacted>", "-l", "role", "--label=a=b=c"), ())
    assert client.labels == {"role=", "a=b=c"}


def bursts(kept: int = 0) -> list:
    """The supervisor starts its clients three at once, four times (their containers
    created 0.3 s later, in no order a client could be told by), then kills them all but the
    first `kept`."""
    s = Stream(t=START)
    clients = []
    for burst in range(4):
        s.at(START + 3 * burst)
        clients += [s.spawn(SUPERVISOR_PID, *docker_run()) for _ in range(3)]
        s.at(START + 3 * burst + 0.3)
        for i in range(3):
            container_id = f"{3 * burst + i + 1:02x}" * 32
            s.container("create", container_id, name=f"burst_{burst}_{i}", image=IMAGE)
            s.container("start", container_id, name=f"burst_{burst}_{i}", image=IMAGE)
    s.at(START + 15)
    for client in clients[kept:]:
        s.exit(client)
        s.reap(client)
    return s.events


def test_rivals_that_all_exited_in_one_group_leave_no_ambiguity():
    _, alerts = judged(bursts())
    [alert, *_] = [a for a in alerts if a.rule == "orphaned_containers"]
    assert len(alert.containers) == 12 and not any(c["ambiguous"] for c in alert.containers)


def test_a_rival_still_running_leaves_its_bursts_containers_ambiguous():
    _, alerts = judged(bursts(kept=1))
    [alert, *_] = [a for a in alerts if a.rule == "orphaned_containers"]
    ambiguous = {c["name"] for c in alert.containers if c["ambiguous"]}
    # burst_0_0 went to the client still running; either of the other two may be its
    assert len(alert.containers) == 11 and ambiguous == {"burst_0_1", "burst_0_2"}


def test_an_unread_environment_alone_makes_the_link_ambiguous():
    stream = mcp_host("orphan")
    stream.events = [replaced(e, environ_unread=True) if isinstance(e, Exec) and e.argv[:1] == ("docker",) else e
                     for e in stream.events]
    [(_, alert)] = firing(run(stream, until=START + 40), "orphaned_containers")[:1]
    assert all(c["ambiguous"] for c in alert.containers)


# --- clients and containers already there when the session began ---------------------------

SESSION = 1000.0  # stream time of the snapshot: the clients have run for a quarter of an hour


def already_there(count: int = 10, options: tuple[str, ...] = (), compose_project: str = "",
                  detached: bool = False, clients: bool = True) -> tuple[Snapshot, list[ContainerEvent]]:
    """The snapshot of a host whose `docker run -i` clients started 1.5 s apart from t = 100
    (`clients=False`: they exited before the session, as a `-d` script's do), and the create
    and start of their containers, as the resolver lists them after it (dated by the engine)."""
    started = [100.0 + 1.5 * i for i in range(count)]
    seeded = [info(300 + i, SUPERVISOR_PID, t, *docker_run(*options)) for i, t in enumerate(started)] if clients else []
    found = []
    for i, t in enumerate(started):
        fields = dict(id=f"{i + 1:02x}" * 32, name=f"sleepy_{i}", image=IMAGE, compose_project=compose_project)
        found += [ContainerEvent(BOOT_OFFSET + t + 0.3, "create", **fields),
                  ContainerEvent(BOOT_OFFSET + t + 0.5, "start", detached=detached, **fields)]
    return host(SESSION, *seeded), found


def session(found: list[ContainerEvent], count: int = 10, found_after: float = 5.0,
            stop_containers: bool = False) -> Stream:
    """The session's stream: the found containers `found_after` s after the snapshot (the
    engine listed), then the host SIGKILLs its clients one a second (or, `stop_containers`,
    stops the containers first, as a host cleaning up does)."""
    s = Stream(t=SESSION)
    s.at(SESSION + found_after)
    s.spawn(100, "ls")  # the session's clock goes on before the engine's list comes
    s.events += found
    for i in range(count):
        s.at(SESSION + found_after + 1 + i)
        client = 300 + i
        s.reparent(client, SUPERVISOR_PID)
        if stop_containers:  # and leaves them stopped: only their die tells
            s.container("die", f"{i + 1:02x}" * 32, exit_code=143)
        s.end(client)
    return s


def test_clients_and_containers_there_before_the_session_are_joined_when_the_clients_are_killed():
    first, found = already_there()
    alerts = firing(run(session(found), snapshot=first, until=SESSION + 60), "orphaned_containers")
    [(t, alert)] = alerts[:1]
    assert alert.spawner["pid"] == SUPERVISOR_PID and alert.signature == SIGNATURE
    assert t <= SESSION + 20
    last = alerts[-1][1]
    assert [c["name"] for c in last.containers] == [f"sleepy_{i}" for i in range(10)]
    assert "the oldest for 15 min" in last.message  # since its start, long before the session


def test_the_clients_wait_for_the_found_containers_from_the_snapshot_not_from_their_start():
    """Their start is long past the match window: were they expired at the snapshot's
    evaluation, the containers listed seconds later would find no client."""
    first, found = already_there()
    assert SESSION - 100.0 > load().detect.orphaned_containers.match_window_s
    assert firing(run(session(found, found_after=30.0), snapshot=first, until=SESSION + 80), "orphaned_containers")


def test_found_containers_before_the_snapshot_are_claimed_by_its_clients():
    first, found = already_there()
    pipeline = Pipeline(load())
    alerts = []
    for item in [*found, first, *session([]).events]:
        alerts += pipeline.feed(item)
    alerts += pipeline.evaluate(pipeline.now + 10)
    assert [(a.spawner["pid"], a.orphans) for a in alerts if a.rule == "orphaned_containers"] == [(SUPERVISOR_PID, 10)]


def test_clients_of_before_the_session_are_still_matched_one_to_one_and_by_name():
    first, found = already_there(count=1, options=("--name", "sleepy_7"))
    pipeline = Pipeline(load())
    for item in [first, *found]:
        pipeline.feed(item)
    assert pipeline.detector.containers.containers["01" * 32].client is None  # not the sleepy_7 it asked for
    first, found = already_there(count=3)
    pipeline = Pipeline(load())
    for item in [first, *found]:
        pipeline.feed(item)
    clients = [c.client.pid for c in pipeline.detector.containers.containers.values() if c.client is not None]
    assert clients == [300, 301, 302]  # each container to the client that started just before it


def test_containers_there_before_the_session_that_nothing_leaked_raise_nothing():
    """(The host's ten live clients at the snapshot are `accumulating`'s business.)"""
    def leaks(first: Snapshot, stream: Stream) -> list:
        return firing(run(stream, snapshot=first, until=SESSION + 60), "orphaned_containers")

    first, found = already_there(clients=False)  # a script's `docker run -d`: its clients exited long ago
    assert run(session(found, count=0), snapshot=first, until=SESSION + 60) == []
    first, found = already_there(detached=True)  # the engine says no client attached
    assert leaks(first, session(found)) == []
    first, found = already_there(compose_project="mcp")
    assert leaks(first, session(found)) == []
    first, found = already_there()  # the host stops its containers, then its clients end
    assert leaks(first, session(found, stop_containers=True)) == []


def test_clients_whose_exec_was_lost_are_joined_once_a_resync_adds_them():
    first, found = already_there()
    pipeline = Pipeline(load())
    pipeline.feed(host(50.0))  # the session began before the clients: their execs were lost
    alerts = []
    for item in [*found, Resync(ts=first.ts, processes=first.processes), *session([]).events]:
        alerts += pipeline.feed(item)
    alerts += pipeline.evaluate(pipeline.now + 10)
    assert [(a.spawner["pid"], a.orphans) for a in alerts if a.rule == "orphaned_containers"] == [(SUPERVISOR_PID, 10)]


def test_clients_of_another_engine_from_a_snapshot_or_a_resync_are_never_matched():
    first, found = already_there()
    remote = Snapshot(first.ts, tuple(dataclasses.replace(p, environ=("DOCKER_HOST=ssh://other",))
                                      if p.argv[:1] == ("docker",) else p for p in first.processes))
    pipeline = Pipeline(load())
    for item in [*found, remote, *session([]).events]:
        pipeline.feed(item)
    assert not [a for a in pipeline.evaluate(pipeline.now + 10) if a.rule == "orphaned_containers"]
    pipeline = Pipeline(load())
    pipeline.feed(host(50.0))  # their forks seen, their execs lost: a resync finds what they run
    forks = [Fork(p.start, p.pid, SUPERVISOR_PID, "python3", 1) for p in remote.processes if p.argv[:1] == ("docker",)]
    for item in [*sorted([*forks, *found], key=lambda e: e.ts), Resync(ts=remote.ts, processes=remote.processes),
                 *session([]).events]:
        pipeline.feed(item)
    assert pipeline.lineage.counts["resync_execs"] == len(forks) == 10
    assert not [a for a in pipeline.evaluate(pipeline.now + 10) if a.rule == "orphaned_containers"]
    assert all(c.client is None for c in pipeline.detector.containers.containers.values())


def test_docker_start_clients_claim_started_containers_in_either_order():
    """`docker start -a -i NAME` clients: seeded, their containers found running after the
    snapshot; and exec'd, the engine's start heard before their exec."""
    clients = [info(300 + i, SUPERVISOR_PID, 100.0 + 1.5 * i, "docker", "start", "-a", "-i", f"srv-{i}")
               for i in range(10)]
    found = []
    for i, client in enumerate(clients):
        fields = dict(id=f"{i + 1:02x}" * 32, name=f"srv-{i}", image=IMAGE)
        found += [ContainerEvent(client.start - 50.0, "create", **fields),  # created long before, by `docker create`
                  ContainerEvent(client.start + 0.5, "start", **fields)]
    [(_, alert)] = firing(run(session(found), snapshot=host(SESSION, *clients), until=SESSION + 40),
                          "orphaned_containers")[:1]
    assert alert.signature == "docker start srv-<n>" and alert.orphans >= 8

    s = Stream(t=START)
    for i in range(10):
        s.at(START + 1.5 * i)
        container_id = f"{i + 1:02x}" * 32
        s.container("create", container_id, name=f"srv-{i}", image=IMAGE)
        s.container("start", container_id, name=f"srv-{i}", image=IMAGE)
        client = s.spawn(SUPERVISOR_PID, "docker", "start", "-a", "-i", f"srv-{i}")
        s.at(START + 1.5 * i + 1)
        s.end(client)
    [(_, alert)] = firing(run(s, until=START + 40), "orphaned_containers")[:1]
    assert alert.signature == "docker start srv-<n>" and alert.orphans >= 8


def recorded(first: Snapshot, stream: Stream, until: float) -> tuple[list[dict], list[dict]]:
    """What `watch --record` writes for this session, evaluating every second as the live loop
    does (a tick at each evaluation), and the alerts it sends."""
    pipeline = Pipeline(load(), auto_advance=False)
    records, alerts = [], []

    def evaluate(now: float) -> None:
        before = pipeline.evaluations
        sent = pipeline.advance(now)
        if pipeline.evaluations != before:
            records.append({"kind": "tick", "ts": pipeline.now})
        alerts.extend(a.to_record() for a in sent)

    for item in [first, *stream.events]:
        records.append(to_record(item))
        pipeline.feed(item)
        evaluate(item.ts)
    for tick in itertools.count(pipeline.now + 1):
        if tick > BOOT_OFFSET + until:
            break
        evaluate(tick)
    return records, alerts


def test_a_replay_of_the_recording_raises_the_same_alerts(tmp_path):
    first, found = already_there()
    records, live = recorded(first, session(found), until=SESSION + 40)
    assert "orphaned_containers" in [r["rule"] for r in live]
    path = tmp_path / "before.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    result = CliRunner().invoke(main, ["watch", "--replay", str(path), "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    replayed = [r for r in map(json.loads, result.stdout.splitlines()) if r.get("kind") == "alert"]

    def essence(alert: dict) -> tuple:
        return (alert["rule"], alert["state"], alert["spawner"]["pid"], alert["signature"],
                [(c["id"], c["name"], c["image"]) for c in alert["containers"]], alert["message"])

    assert [essence(r) for r in replayed] == [essence(r) for r in live]


# -- a restart of `watch`: the links it kept, taken back ----------------------------------

def links_after_a_leak() -> list[dict]:
    """The links `watch` keeps once the host's clients were killed, as written to its state
    file (records, through JSON)."""
    pipeline = Pipeline(load())
    pipeline.feed(host())
    for event in mcp_host("orphan", count=10).events:
        pipeline.feed(event)
    pipeline.advance(BOOT_OFFSET + START + 40)
    return json.loads(json.dumps([link.as_record() for link in pipeline.detector.containers.links()]))


def restarted(records: list[dict], supervisor_start: float = 2.0, at: float = START + 120) -> list:
    """A new `watch`: its snapshot shows the host (started at `supervisor_start`), the links are
    taken back, and it evaluates: the alerts it sends."""
    pipeline = Pipeline(load())
    pipeline.feed(snapshot(at, INIT, SHELL, info(SUPERVISOR_PID, 100, supervisor_start, "python3", "supervisor.py")))
    links = [Link.from_record(record) for record in records]
    pipeline.detector.containers.restore(links, BOOT_OFFSET + at, pipeline.lineage.get, pipeline.detector.book)
    return [a for a in pipeline.advance(BOOT_OFFSET + at + 1) if a.state == "firing"]


def test_a_restarted_watch_still_charges_the_host_its_containers():
    records = links_after_a_leak()
    assert len(records) == 10 and {r["client"]["exited_at"] is not None for r in records} == {True}
    [alert] = restarted(records)
    assert alert.rule == "orphaned_containers" and alert.spawner["pid"] == SUPERVISOR_PID
    assert alert.signature == SIGNATURE
    assert [c["name"] for c in alert.containers] == [f"sleepy_{i}" for i in range(10)]


def test_a_restarted_watch_charges_the_host_whose_start_it_read_from_a_fork_event_before():
    """The last `watch` saw the host forked (a start in nanoseconds, just before a tick's
    edge, so it rounds up); this one reads the host's start from /proc (the tick below)."""
    records = links_after_a_leak()
    for record in records:
        record["charge"]["spawner_start_ticks"] += 1
    [alert] = restarted(records)
    assert alert.rule == "orphaned_containers" and alert.spawner["pid"] == SUPERVISOR_PID
    assert len(alert.containers) == 10


def test_a_restarted_watch_never_charges_a_process_that_got_the_hosts_pid():
    assert restarted(links_after_a_leak(), supervisor_start=90.0) == []


def test_a_container_judged_ambiguous_before_a_restart_stays_ambiguous_after_it():
    records = links_after_a_leak()
    for record in records:
        record["container"]["ambiguous"] = True
    [alert] = restarted(records)
    assert all(c["ambiguous"] for c in alert.containers) and "reap leaves those" in alert.message
