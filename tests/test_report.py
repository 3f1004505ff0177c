"""`spawnwatch report`: the report dict from collected facts (pure), a leak found from /proc
alone and ended with the command the report recommends, and a real Docker engine."""

from __future__ import annotations

import io
import json
import shlex
import tarfile
import uuid
from dataclasses import replace

import psutil
import pytest

from conftest import wait_for
from click.testing import CliRunner

from spawnwatch.adapters.cgroups import PidsReading
from spawnwatch.adapters.engine import ContainerInfo
from spawnwatch.adapters.memory import CgroupMemory, HostMemory
from spawnwatch.cli.reap import command as reap_command
from spawnwatch.cli.report import command as report_command
from spawnwatch.detect import Finding, Group, GroupKey, SpawnHistory
from spawnwatch.lineage import Process
from spawnwatch.report import ContainerFacts, Facts, GroupFacts, build, render
from spawnwatch.simulate import Simulation

MIB = 1024 * 1024
GIB = 1024 * MIB
CONTAINER_ID = "ab" * 32


def process(pid: int, ppid: int, *argv: str) -> Process:
    return Process(pid=pid, start=1.0, ppid=ppid, comm=argv[0], argv=argv, signature=" ".join(argv), cgroup_id=7)


def finding(rule: str, spawner: Process, signature: str, detail: str) -> Finding:
    group = Group(key=GroupKey(7, spawner.key, signature), spawner=spawner, history=SpawnHistory(60))
    return Finding(rule=rule, group=group, pids=(), orphans=0, rss_bytes=0, uss_bytes=None, detail=detail)


def facts() -> Facts:
    supervisor = process(4242, 1, "node", "metamcp.js")
    leaking = GroupFacts(
        signature="npm exec magic",
        spawner=supervisor,
        container_id=CONTAINER_ID,
        processes=20,
        zombies=0,
        rss_bytes=1536 * MIB,
        pids=tuple(range(5000, 5020)),
        findings=(finding("accumulating", supervisor, "npm exec magic", "20 live, spawned one by one over 38 s"),),
        reap_targets=((4242, "npm exec magic", 20),),
    )
    zombies = GroupFacts(
        signature="python worker.py",
        spawner=process(300, 1, "python", "pool.py"),
        container_id=None,
        processes=9,
        zombies=9,
        rss_bytes=0,
        pids=tuple(range(6000, 6009)),
        findings=(finding("zombie", process(300, 1, "python", "pool.py"), "python worker.py", "9 exited children not reaped"),),
    )
    return Facts(
        host_memory=HostMemory(total=16 * GIB, used=10 * GIB, free=1 * GIB, cache=5 * GIB),
        host_processes=180,
        containers=(
            ContainerFacts(
                info=ContainerInfo(id=CONTAINER_ID, name="mcp-1", image="metamcp:2.4", compose_project="mcp",
                                   compose_service="metamcp", restart_count=3),
                memory=CgroupMemory(used=2 * GIB, limit=None),
                processes=64,
                pids=PidsReading(f"/docker/{CONTAINER_ID}", current=70, limit=None, refused=0),
            ),
        ),
        groups=(leaking, zombies),
        docker_available=True,
        dangling_images=({"id": "sha256:1", "size_bytes": 300 * MIB},),
        unused_volumes=({"name": "old-data", "size_bytes": 20 * MIB},),
    )


def test_the_report_holds_every_figure_and_the_actions() -> None:
    report = build(facts())
    assert report["host"]["memory"] == {
        "total_bytes": 16 * GIB, "used_bytes": 10 * GIB, "free_bytes": GIB, "cache_bytes": 5 * GIB,
    }
    (container,) = report["containers"]
    assert container["memory_bytes"] == 2 * GIB and container["memory_percent"] == 12.5
    assert container["memory_limit_bytes"] is None and container["pids_limit"] is None
    assert (container["pids_current"], container["pids_refused_forks"]) == (70, 0)
    assert (container["processes"], container["restart_count"]) == (64, 3)
    (group,) = container["groups"]
    assert (group["signature"], group["processes"], group["rss_bytes"]) == ("npm exec magic", 20, 1536 * MIB)
    assert report["host"]["groups"][0]["zombies"] == 9
    assert report["docker"]["dangling_images_bytes"] == 300 * MIB
    assert report["docker"]["unused_volumes_bytes"] == 20 * MIB

    kinds = [a["kind"] for a in report["actions"]]
    assert sorted(kinds) == ["limits", "prune_images", "prune_volumes", "reap", "zombies"]
    reap = next(a for a in report["actions"] if a["kind"] == "reap")
    assert shlex.split(reap["command"]) == [
        "spawnwatch", "reap", "--signature", "npm exec magic", "--spawner", "4242", "--container", "mcp-1", "--keep", "1",
    ]
    limits = next(a for a in report["actions"] if a["kind"] == "limits")
    # sized on the container without its leak: 2 GiB - 1.5 GiB used, 64 - 20 processes, doubled
    assert limits["compose"] == "services:\n  metamcp:\n    mem_limit: 1024m\n    pids_limit: 128"
    assert limits["command"] == "docker update --memory 1024m --memory-swap 1024m --pids-limit 128 mcp-1"


def test_orphans_adopted_by_init_get_no_reap_command_and_orphans_elsewhere_keep_none() -> None:
    # The supervisor's killed children left servers behind: some adopted by init, some
    # by a subreaper (pid 77).  `reap` refuses init's children, so no command names them.
    supervisor = process(4242, 1, "node", "metamcp.js")
    orphans = GroupFacts(
        signature="npm exec magic", spawner=supervisor, container_id=None, processes=0, zombies=0,
        rss_bytes=400 * MIB, pids=(),
        findings=(finding("orphaned", supervisor, "npm exec magic", "12 processes left alive by 12 exited children"),),
        reap_targets=((1, "node magic", 6), (77, "node magic", 6)),
    )
    report = build(replace(facts(), groups=(orphans,), containers=()))
    commands = [shlex.split(a["command"]) for a in report["actions"] if a["kind"] == "reap"]
    assert commands == [["spawnwatch", "reap", "--signature", "node magic", "--spawner", "77", "--keep", "0"]]


def test_the_human_view_shows_the_same_report() -> None:
    text = render(build(facts()))
    assert "total 16.0 GiB  used 10.0 GiB  free 1.0 GiB  cache 5.0 GiB" in text
    assert "npm exec magic" in text and "x20" in text and "1.5 GiB" in text
    row = next(line for line in text.splitlines() if line.startswith("mcp-1"))
    assert row.split()[1:] == ["metamcp:2.4", "2.0", "GiB", "12.5%", "none", "64", "3", "70/none", "0"]
    assert "mem_limit: 1024m" in text
    assert "spawnwatch reap --signature 'npm exec magic' --spawner 4242 --container mcp-1 --keep 1" in text


def test_a_container_at_its_pids_limit_shows_the_refused_forks() -> None:
    """The limit that applies is the cgroup's (a parent slice's TasksMax too), not only the engine's."""
    at_limit = replace(facts().containers[0], pids=PidsReading("/machine.slice", current=64, limit=64, refused=12))
    report = build(replace(facts(), containers=(at_limit,)))
    (container,) = report["containers"]
    assert (container["pids_limit"], container["pids_current"], container["pids_refused_forks"]) == (64, 64, 12)
    limits = next(a for a in report["actions"] if a["kind"] == "limits")
    assert "pids_limit" not in limits["compose"] and "--pids-limit" not in limits["command"]
    row = next(line for line in render(report).splitlines() if line.startswith("mcp-1"))
    assert row.split()[-2:] == ["64/64", "12"]


def test_every_leak_is_listed_and_healthy_groups_fill_up_to_the_cap() -> None:
    spawner = process(500, 1, "node", "host.js")

    def group(signature: str, rss_mib: int, leaking: bool) -> GroupFacts:
        found = (finding("accumulating", spawner, signature, "growing"),) if leaking else ()
        return GroupFacts(signature=signature, spawner=spawner, container_id=None, processes=9, zombies=0,
                          rss_bytes=rss_mib * MIB, pids=(), findings=found)

    leaks = [group(f"leak {i}", 1, True) for i in range(7)]  # more leaks than the cap of 5, and small
    pools = [group(f"pool {i}", 900, False) for i in range(3)]  # big healthy pools
    shown = build(replace(facts(), groups=(*pools, *leaks)))["host"]["groups"]
    assert sorted(g["signature"] for g in shown) == sorted(f"leak {i}" for i in range(7))
    few = build(replace(facts(), groups=(*pools, leaks[0])))["host"]["groups"]
    assert [g["signature"] for g in few] == ["leak 0", "pool 0", "pool 1", "pool 2"]


# --- real processes ---------------------------------------------------------------------------



def invoke(cmd, *args: str) -> dict:
    result = CliRunner().invoke(cmd, [*args, "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def live_children(pid: int) -> list[int]:
    live = []
    for child in psutil.Process(pid).children():
        try:
            if child.status() != psutil.STATUS_ZOMBIE:
                live.append(child.pid)
        except psutil.NoSuchProcess:  # ended and reaped between the listing and the look
            pass
    return live


def test_a_leak_found_from_proc_alone_ends_with_the_recommended_command() -> None:
    # Ten identical children, spawned two at a time a second apart, none ever ended: the
    # shape `watch` calls accumulating, here already present when the report runs.
    marker = str(1000 + uuid.uuid4().int % 1000)
    parent = psutil.Popen(
        ["sh", "-c", f"for i in 1 2 3 4 5; do sleep {marker} & sleep {marker} & sleep 1.1; done; wait"],
        start_new_session=True,
    )
    try:
        wait_for(lambda: len(live_children(parent.pid)) == 10, "ten children", deadline=60.0)
        report = invoke(report_command)
        (group,) = [g for g in report["host"]["groups"] if g["spawner"]["pid"] == parent.pid]
        assert group["processes"] == 10 and group["rss_bytes"] > 0
        assert [f["rule"] for f in group["leak"]] == ["accumulating"]
        (action,) = [a for a in report["actions"] if a["kind"] == "reap" and f"--spawner {parent.pid}" in a["command"]]
        argv = shlex.split(action["command"])
        assert argv[:2] == ["spawnwatch", "reap"]
        newest = max(live_children(parent.pid), key=lambda pid: (psutil.Process(pid).create_time(), pid))
        ended = invoke(reap_command, *argv[2:], "--yes")
        assert len(ended["ended"]) == 9 and ended["kept"] == [newest]
        wait_for(lambda: live_children(parent.pid) == [newest], "only the newest child left", deadline=60.0)
    finally:
        for child in psutil.Process(parent.pid).children():
            child.kill()
        parent.kill()
        parent.wait()


@pytest.mark.root
@pytest.mark.npm
def test_orphans_seen_while_tracing_end_with_the_recommended_command() -> None:
    # The supervisor kills only each child's `npm exec`: the servers below live on, adopted
    # by the simulation's subreaper.  Only a trace links them to the supervisor.
    with Simulation("orphan", interval=0.5, memory_mb=5) as sim:
        report = invoke(report_command, "--trace", "15")
        (group,) = [g for g in report["host"]["groups"] if g["spawner"]["pid"] == sim.pid and g["leak"]]
        assert "orphaned" in [f["rule"] for f in group["leak"]]
        (orphans,) = [t for t in group["reap"] if t["spawner"] != sim.pid]
        assert sim.pid in [c.pid for c in psutil.Process(orphans["spawner"]).children()]  # the subreaper
        commands = [shlex.split(a["command"]) for a in report["actions"] if a["kind"] == "reap"]
        (argv,) = [
            c for c in commands
            if c[c.index("--spawner") + 1] == str(orphans["spawner"]) and c[c.index("--signature") + 1] == orphans["signature"]
        ]
        ended = invoke(reap_command, *argv[2:], "--yes")
        assert ended["ended"] and not ended["survived"]
        assert {t["pid"] for t in ended["targets"]} <= set(ended["ended"]) | set(ended["gone"])
        assert psutil.Process(sim.pid).status() != psutil.STATUS_ZOMBIE  # the supervisor lives on


@pytest.mark.docker
def test_containers_their_groups_and_dockers_leftovers(docker_env) -> None:  # noqa: F811
    limited = docker_env.run(
        "sh", "-c", "for i in 1 2 3; do sleep 1000 & done; wait",
        options=("--memory", "256m", "--pids-limit", "100"),
    )
    unlimited = docker_env.run("sleep", "1000", options=("--label", "com.docker.compose.service=mcp"))
    volume = f"spawnwatch-test-{uuid.uuid4().hex[:8]}"
    docker_env.cli("volume", "create", volume)
    dangling = _dangling_image(docker_env)
    try:
        def seen():
            report = invoke(report_command)
            by_id = {c["id"]: c for c in report["containers"]}
            return report if limited in by_id and by_id[limited]["processes"] == 4 else None

        report = wait_for(seen, "the containers in the report", deadline=60.0)
        by_id = {c["id"]: c for c in report["containers"]}
        box = by_id[limited]
        assert box["memory_limit_bytes"] == 256 * MIB and box["pids_limit"] == 100
        assert (box["pids_current"], box["pids_refused_forks"]) == (4, 0)  # read from the container's cgroup
        assert box["memory_bytes"] > 0 and box["restart_count"] == 0 and box["image"] == docker_env.image
        assert [(g["signature"], g["processes"]) for g in box["groups"]] == [("sleep <n>", 3)]
        assert by_id[unlimited]["memory_limit_bytes"] is None
        limits = {a["container"]: a for a in report["actions"] if a["kind"] == "limits"}
        assert by_id[limited]["name"] not in limits
        assert limits[by_id[unlimited]["name"]]["compose"].startswith("services:\n  mcp:\n    mem_limit: ")
        assert dangling in [i["id"] for i in report["docker"]["dangling_images"]]
        assert volume in [v["name"] for v in report["docker"]["unused_volumes"]]
        assert {"prune_images", "prune_volumes"} <= {a["kind"] for a in report["actions"]}
    finally:
        docker_env.cli("volume", "rm", "-f", volume, check=False)
        docker_env.cli("rmi", dangling, check=False)


def _dangling_image(docker_env) -> str:  # noqa: F811
    """An untagged image: the tag moves to a second import and leaves the first one bare."""
    tag = f"spawnwatch-test-dangling:{uuid.uuid4().hex[:8]}"
    ids = []
    for content in (b"first", b"second"):
        archive = io.BytesIO()
        with tarfile.open(fileobj=archive, mode="w") as tar:
            member = tarfile.TarInfo("marker")
            member.size = len(content)
            tar.addfile(member, io.BytesIO(content))
        ids.append(docker_env.cli("import", "-", tag, stdin=archive.getvalue()))
    docker_env.cli("rmi", tag)
    return ids[0]
