"""pids limits: the pids rule on synthetic streams with pids samples, replayed through the
CLI; the cgroup reading on the real cgroup tree; and a leak in a container started with
`--pids-limit 64` under a live `watch`."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator

import pytest
from click.testing import CliRunner

from conftest import missing_prerequisite, wait_for
from live import LiveCommand
from spawnwatch.adapters.cgroups import (
    PidsCgroup, PidsReading, cgroup2_mount, inode, pids_mounts, pids_of_process, read_pids, read_proc_cgroups,
)
from spawnwatch.adapters.cgroups import pids_cgroup as pids_cgroup_of
from spawnwatch.adapters.pids import PidsSampler
from spawnwatch.cli import main
from spawnwatch.config import load
from spawnwatch.events import to_record
from streams import Stream, host
from workloads import SUPERVISOR_PID, run

CONTAINER = 7  # the container's cgroup id in the synthetic streams


def leak_under_limit(limit: int | None, seconds: int = 120, tasks_before: int = 1, fill_to: int | None = None) -> Stream:
    """A shell in a container forking one `sleep 1000` a second that never ends; the sampler
    reads the container's pids controller every second.  Past the limit the forks fail (no
    fork event) and pids.events counts them."""
    s = Stream(t=10, cgroup_id=CONTAINER)
    shell = s.spawn(SUPERVISOR_PID, "sh", "-c", "while :; do sleep 1000 & sleep 1; done")
    current, refused = tasks_before, 0
    for second in range(seconds):
        s.at(11 + second)
        if fill_to is not None and current >= fill_to:
            pass
        elif limit is None or current < limit:
            s.spawn(shell, "sleep", "1000")
            current += 1
        else:
            refused += 1
        s.pids(current, limit, refused)
    return s


def pids_alerts(alerts):
    return [(t, a) for t, a in alerts if a.rule == "pids"]


def test_fires_at_80_percent_before_the_first_refused_fork():
    alerts = pids_alerts(run(leak_under_limit(64)))
    t, first = alerts[0]
    assert first.state == "firing" and first.severity == "warning"
    assert first.pids_limit.refused == 0 and 0.8 * 64 <= first.pids_limit.current < 64
    assert first.signature == "sleep <n>" and first.live >= 50
    assert "fills the pids limit of cgroup /docker/leaky with `sleep <n>`" in first.message
    assert "no fork refused yet" in first.message
    record = first.to_record()
    assert record["pids_limit"] == {"cgroup": "/docker/leaky", "current": first.pids_limit.current, "limit": 64,
                                    "refused_forks": 0}


def test_refused_forks_make_it_critical_at_once_and_are_re_reported_as_they_grow():
    alerts = pids_alerts(run(leak_under_limit(64, seconds=150)))
    refused = [(t, a) for t, a in alerts if a.pids_limit.refused]
    t, critical = refused[0]
    # the shell and 63 sleeps reach the limit at t = 73; the next fork, a second later, is refused
    assert critical.severity == "critical" and critical.pids_limit.refused == 1 and t == 74
    assert "1 fork refused by it" in critical.message
    counts = [a.pids_limit.refused for _, a in refused]
    assert len(counts) >= 3 and counts == sorted(counts) and len(set(counts)) == len(counts)
    assert all(a.state == "firing" for _, a in refused)


def test_no_fire_below_the_share():
    assert pids_alerts(run(leak_under_limit(640))) == []


def test_no_fire_without_a_limit():
    assert pids_alerts(run(leak_under_limit(None))) == []


def test_the_share_comes_from_the_config():
    config = load()
    config = replace(config, detect=replace(config.detect, pids=replace(config.detect.pids, share=0.5)))
    _, first = pids_alerts(run(leak_under_limit(64), config=config))[0]
    assert first.pids_limit.current == 32


def test_a_few_children_near_a_limit_are_no_leak():
    """Threads fill the limit, not children: no group to name."""
    s = leak_under_limit(64, seconds=3, tasks_before=60)
    assert pids_alerts(run(s)) == []


def test_the_group_holding_most_of_the_limit_is_named():
    s = Stream(t=10, cgroup_id=CONTAINER)
    pool = s.spawn(SUPERVISOR_PID, "node", "pool.js")
    for _ in range(8):
        s.spawn(pool, "worker", "--serve")
    shell = s.spawn(SUPERVISOR_PID, "sh", "-c", "while :; do sleep 1000 & sleep 1; done")
    for second in range(50):
        s.at(11 + second)
        s.spawn(shell, "sleep", "1000")
        s.pids(10 + second + 1, 64)
    alerts = pids_alerts(run(s))
    assert alerts and {a.signature for _, a in alerts} == {"sleep <n>"}


def cleared(ended: int) -> Stream:
    """The leak under a limit of 64, stopped at t = 80 with forks refused from t = 74; at
    t = 90 `ended` of its sleeps end."""
    s = leak_under_limit(64, seconds=70)
    sleeps = [e.pid for e in s.events if e.kind.value == "exec" and e.comm == "sleep"]
    s.at(90)
    for pid in sleeps[:ended]:
        s.end(pid)
    s.pids(64 - ended, 64, refused=7)
    return s


def test_recent_refusals_hold_the_alert_below_the_share():
    hold = load().detect.pids.hold_s
    alerts = pids_alerts(run(cleared(40), until=80 + hold + 10))
    [(t, last)] = [(t, a) for t, a in alerts if a.state == "resolved"]
    assert 80 + hold <= t <= 80 + hold + 7 and last.severity == "critical" and last.pids_limit.refused == 7


def test_the_alert_resolves_once_the_leak_is_gone():
    alerts = pids_alerts(run(cleared(63), until=120))
    [(t, last)] = [(t, a) for t, a in alerts if a.state == "resolved"]
    assert 90 <= t <= 90 + load().alerts.resolve_after_s + 2


def test_replay_of_a_recording_raises_the_same_pids_alerts(tmp_path):
    stream = leak_under_limit(64, seconds=100)
    recording = tmp_path / "pids.jsonl"
    lines = [to_record(host())] + [to_record(e) for e in stream.events]
    recording.write_text("".join(json.dumps(line) + "\n" for line in lines))
    result = CliRunner().invoke(main, ["watch", "--replay", str(recording), "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    replayed = [r for r in map(json.loads, result.stdout.splitlines()) if r.get("rule") == "pids"]
    expected = [a.to_record() for _, a in pids_alerts(run(stream))]
    assert [r["pids_limit"] for r in replayed] == [r["pids_limit"] for r in expected]
    assert [r["message"] for r in replayed] == [r["message"] for r in expected]
    assert replayed[0]["pids_limit"]["refused_forks"] == 0 and replayed[-1]["pids_limit"]["refused_forks"] > 0


# --- the cgroup tree ----------------------------------------------------------------------------


@dataclass
class ScratchCgroup:
    mount: str
    path: str  # below this test process's own pids cgroup

    @property
    def dir(self) -> Path:
        return Path(self.mount + self.path)

    def child(self, name: str) -> "ScratchCgroup":
        (self.dir / name).mkdir()
        return ScratchCgroup(self.mount, f"{self.path}/{name}")

    def start(self, script: str) -> subprocess.Popen:
        """`sh -c script` inside this cgroup from its first instruction."""
        procs = self.dir / "cgroup.procs"
        return subprocess.Popen(["sh", "-c", script], preexec_fn=lambda: procs.write_text("0"),
                                stderr=subprocess.DEVNULL)


@pytest.fixture
def pids_cgroup() -> Iterator[ScratchCgroup]:
    """A new cgroup in the pids hierarchy (v1's own, or cgroup2 with the pids controller),
    removed with everything in it afterwards."""
    if os.geteuid() != 0:
        missing_prerequisite("creating cgroups needs root")
    v1, v2 = pids_mounts()
    mount = v1 or v2
    if mount is None:
        missing_prerequisite("no pids controller on this host")
    own = read_proc_cgroups("self")
    where = pids_cgroup_of(own, v1, v2)
    assert where is not None
    base = where.path.rstrip("/")
    if v1 is None and "pids" not in (Path(mount + (base or "/")) / "cgroup.subtree_control").read_text().split():
        missing_prerequisite("the pids controller is not enabled below this process's cgroup")
    cgroup = ScratchCgroup(mount, f"{base}/spawnwatch-pids-{uuid.uuid4().hex[:8]}")
    cgroup.dir.mkdir()
    try:
        yield cgroup
    finally:
        remove_cgroup(cgroup.dir)


@pytest.fixture
def shell_limited_to_20(pids_cgroup) -> Iterator[tuple[subprocess.Popen, int]]:
    """A shell and its sleep in `pids_cgroup`, limited to 20 tasks: the shell and the cgroup's id
    once both run; both killed afterwards."""
    (pids_cgroup.dir / "pids.max").write_text("20")
    shell = pids_cgroup.start("sleep 1000 & wait")
    try:
        cgroup = PidsCgroup(pids_cgroup.mount, pids_cgroup.path)
        wait_for(lambda: (r := read_pids(cgroup)) and r.current == 2, "the shell and its sleep")
        yield shell, inode(cgroup2_mount(), read_proc_cgroups(shell.pid).v2_path)
    finally:
        shell.kill()
        shell.wait()


def remove_cgroup(top: Path) -> None:
    deadline = time.monotonic() + 30
    for directory in sorted((p for p in [top, *top.rglob("*")] if p.is_dir()), key=lambda p: -len(p.parts)):
        while directory.exists():
            for pid in (directory / "cgroup.procs").read_text().split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                directory.rmdir()
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)


@pytest.mark.root  # pids_cgroup: creating a cgroup needs root
def test_a_limited_cgroup_reads_its_limit_tasks_and_refused_forks(pids_cgroup):
    (pids_cgroup.dir / "pids.max").write_text("5")
    shell = pids_cgroup.start("sleep 1000 & sleep 1000 & sleep 1000 & wait")
    try:
        cgroup = PidsCgroup(pids_cgroup.mount, pids_cgroup.path)
        reading = wait_for(lambda: (r := read_pids(cgroup)) and r.current == 4 and r, "the shell and 3 sleeps")
        assert reading == PidsReading(pids_cgroup.path, 4, 5, 0)
        assert pids_of_process(shell.pid) == reading
        # The fifth task fits, the sixth is refused: counted in pids.events.
        filler = pids_cgroup.start("sleep 1000 & sleep 1000 & wait")
        reading = wait_for(lambda: (r := read_pids(cgroup)) and r.refused and r, "a refused fork")
        assert reading.current == 5 and reading.limit == 5 and reading.refused >= 1
        filler.wait(timeout=30)
    finally:
        shell.kill()
        shell.wait()


@pytest.mark.root  # pids_cgroup: creating a cgroup needs root
def test_a_cgroup_under_a_limited_parent_reads_the_parents_limit(pids_cgroup):
    (pids_cgroup.dir / "pids.max").write_text("40")
    unit = pids_cgroup.child("unit")
    shell = unit.start("sleep 1000 & wait")
    try:
        reading = wait_for(lambda: (r := read_pids(PidsCgroup(unit.mount, unit.path))) and r.current == 2 and r,
                           "the shell and its sleep")
        assert reading == PidsReading(pids_cgroup.path, 2, 40, 0)
        (pids_cgroup.dir / "pids.max").write_text("max")
        assert read_pids(PidsCgroup(unit.mount, unit.path)) == PidsReading(unit.path, 2, None, 0)
    finally:
        shell.kill()
        shell.wait()


@pytest.mark.root  # pids_cgroup: creating a cgroup needs root
def test_a_removed_cgroup_reads_nothing(pids_cgroup):
    gone = pids_cgroup.child("gone")
    gone.dir.rmdir()
    assert read_pids(PidsCgroup(gone.mount, gone.path)) is None


def test_cgroup_v2_layout_counts_refusals_at_the_limit_and_skips_cgroups_without_the_controller(tmp_path):
    """The cgroup2 layout, which this host's v1 pids controller cannot show: a TasksMax on a
    slice, a unit whose subtree has the controller off, refusals counted at the slice."""
    files = {
        "/system.slice/pids.max": "max", "/system.slice/pids.current": "9", "/system.slice/pids.events": "max 0",
        "/system.slice/app.service/pids.max": "30", "/system.slice/app.service/pids.current": "30",
        "/system.slice/app.service/pids.events": "max 12",
        "/system.slice/app.service/worker/cgroup.procs": "",
    }
    for name, text in files.items():
        (tmp_path / name.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name.lstrip("/")).write_text(text + "\n")
    reading = read_pids(PidsCgroup(str(tmp_path), "/system.slice/app.service/worker"))
    assert reading == PidsReading("/system.slice/app.service", 30, 30, 12)
    assert read_pids(PidsCgroup(str(tmp_path), "/system.slice")) == PidsReading("/system.slice", 9, None, 0)


@pytest.mark.root  # pids_cgroup: creating a cgroup needs root
def test_the_sampler_emits_a_sample_only_when_a_value_changed(pids_cgroup, shell_limited_to_20):
    shell, cgroup_id = shell_limited_to_20
    more: subprocess.Popen | None = None
    try:
        cgroup = PidsCgroup(pids_cgroup.mount, pids_cgroup.path)
        sampler = PidsSampler(load().detect.pids, lambda cgroup_id, pid: None)
        members = lambda: {cgroup_id: shell.pid}  # noqa: E731 - the pipeline's cgroups
        [sample] = sampler.poll(members, 100.0)
        assert (sample.ts, sample.cgroup_id, sample.current, sample.limit, sample.refused, sample.path) == (
            100.0, cgroup_id, 2, 20, 0, pids_cgroup.path)
        assert sampler.poll(members, 100.5) == []  # not due
        assert sampler.poll(members, 101.0) == []  # due, nothing changed
        assert sampler.limits() == [{"container": "", "namespace": "", "pod": "", "cgroup": pids_cgroup.path,
                                     "current": 2, "limit": 20, "refused": 0}]
        more = pids_cgroup.start("sleep 1000 & wait")
        wait_for(lambda: read_pids(cgroup).current == 4, "two more tasks")
        [sample] = sampler.poll(members, 102.0)
        assert sample.current == 4 and sample.ts == 102.0
        (pids_cgroup.dir / "pids.max").write_text("max")
        [sample] = sampler.poll(members, 103.0)  # the limit went away: said once
        assert sample.limit is None and sampler.limits() == []
        assert sampler.poll(members, 104.0) == []  # a cgroup without a limit is looked at again in 30 s
    finally:
        if more is not None:
            more.kill()
            more.wait()


def test_the_sampler_ignores_a_pid_that_is_not_in_the_cgroup_any_more():
    # Only the cgroup2 directory's inode can tell the member moved, and there must be a pids
    # hierarchy for the sampler to look at all.
    if cgroup2_mount() is None or pids_mounts() == (None, None):
        missing_prerequisite("no cgroup2 mount or no pids controller on this host")
    # A sampler that may keep none counts each cgroup it takes up as let go: none taken up, none counted.
    sampler = PidsSampler(load().detect.pids, capacity=0)
    not_ours = inode(cgroup2_mount(), read_proc_cgroups("self").v2_path) + 1
    assert sampler.poll(lambda: {not_ours: os.getpid()}, 1.0) == []
    assert sampler.evicted == 0


@pytest.mark.root  # pids_cgroup: creating a cgroup needs root
def test_the_sampler_watches_a_bounded_number_of_cgroups_and_counts_those_let_go(shell_limited_to_20):
    # Two cgroups of distinct ids need cgroup2 paths apart (a hybrid host puts both at /): a
    # sampler that may keep none lets each cgroup go as soon as it is read, and counts it.
    shell, cgroup_id = shell_limited_to_20
    sampler = PidsSampler(load().detect.pids, capacity=0)
    [sample] = sampler.poll(lambda: {cgroup_id: shell.pid}, 100.0)
    assert sample.limit == 20 and sampler.evicted == 1
    sampler.poll(lambda: {cgroup_id: shell.pid}, 101.0)
    assert sampler.evicted == 2


# --- a container with --pids-limit 64 -----------------------------------------------------------

# Node (7 or so tasks of its own: threads count) starting a `sleep 1000` every 0.5 s that
# never ends, and living on when the limit refuses the fork (EAGAIN), as a server would.
LEAK = """
const { spawn } = require('child_process');
setInterval(() => spawn('sleep', ['1000']).on('error', (e) => console.error('spawn:', e.code)), 500);
"""


def pids_alerts_of(records: list[dict], container_id: str) -> list[dict]:
    return [r for r in records if r.get("kind") == "alert" and r["rule"] == "pids"
            and (r.get("container") or {}).get("id") == container_id]


@pytest.mark.root
@pytest.mark.docker
@pytest.mark.slow
def test_a_leak_in_a_container_with_a_pids_limit_is_named_before_forks_fail(docker_env, tmp_path):
    recording = tmp_path / "pids.msgpack"
    with LiveCommand("watch", "--json", "--record", str(recording)) as watch:
        container_id = docker_env.run("node", "-e", LEAK, options=("--pids-limit", "64"))
        name = docker_env.cli("inspect", "-f", "{{.Name}}", container_id).lstrip("/")
        watch.wait_for(lambda rs: pids_alerts_of(rs, container_id), "the pids alert of the container", timeout=180)
        watch.wait_for(lambda rs: any(a["pids_limit"]["refused_forks"] for a in pids_alerts_of(rs, container_id)),
                       "the pids alert counting refused forks", timeout=180)
    alerts = pids_alerts_of(watch.records, container_id)
    first = alerts[0]
    # Read before the limit refused anything: by the sample the alert carries.
    assert first["state"] == "firing" and first["severity"] == "warning"
    assert first["pids_limit"]["refused_forks"] == 0 and first["pids_limit"]["limit"] == 64
    assert 0.8 * 64 <= first["pids_limit"]["current"] < 64
    assert first["signature"] == "sleep <n>" and first["spawner"]["comm"] == "node"
    assert first["container"]["name"] == name and f"pids limit of container {name}" in first["message"]
    refused = [a for a in alerts if a["pids_limit"]["refused_forks"]]
    assert refused[0]["severity"] == "critical" and refused[0]["pids_limit"]["current"] == 64
    assert f"{refused[0]['pids_limit']['refused_forks']} fork" in refused[0]["message"]
    assert alerts[: alerts.index(refused[0])] == [a for a in alerts if not a["pids_limit"]["refused_forks"]]

    replay = CliRunner().invoke(main, ["watch", "--replay", str(recording), "--json"], catch_exceptions=False)
    assert replay.exit_code == 0, replay.stderr
    replayed = [r for r in map(json.loads, replay.stdout.splitlines())
                if r.get("rule") == "pids" and r["pids_limit"]["cgroup"].endswith(container_id)]
    # A replay has no processes to measure; it names the container as the live session's alerts did.
    assert [r["container"] for r in replayed] == [a["container"] for a in alerts]
    assert [comparable(r) for r in replayed] == [comparable(a) for a in alerts]


def comparable(alert: dict) -> dict:
    """An alert without what only a live host can tell: its memory (also in the message), its
    container, and its spawner's parent (a live session asks /proc who adopted an orphan)."""
    return {**alert, "container": None, "rss_bytes": 0, "spawner": {**alert["spawner"], "ppid": None},
            "message": re.sub(r"; [0-9.]+ \w+ RSS.*", "", alert["message"])}
