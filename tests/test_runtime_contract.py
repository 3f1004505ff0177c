"""The container contract across runtimes, without root: the one resolver naming a pod's
container from its runtime's state (CRI-O's recorded state, a fake /proc and cgroup tree),
and the pod in every view: the alert's message, the human view, metrics and Alertmanager
labels, `tree --container POD`, `report`'s pods, `doctor`'s survey; and the replay of a
recording made before runtimes were named (the live counterpart: test_runtime_leaks.py)."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from spawnwatch.adapters.cgroups import parse_cgroup_path
from spawnwatch.adapters.engine import ContainerInfo
from spawnwatch.adapters.memory import CgroupMemory, HostMemory
from spawnwatch.adapters.resolver import ContainerResolver
from spawnwatch.adapters.runtimes import RuntimeFound, survey
from spawnwatch.alerts import where
from spawnwatch.cli import main
from spawnwatch.filters import container_matches
from spawnwatch.recording import RecordingWriter, read_records
from spawnwatch.report import ContainerFacts, Facts, build, render
from spawnwatch.sinks.alertmanager import alert_labels
from spawnwatch.sinks.human import render_alert
from spawnwatch.sinks.prometheus import Metrics
from test_containers import FakeHost
from test_runtimes import CONTAINERD_ID, CONTAINERD_POD, CRIO_ID, CRIO_POD, FIXTURES, PODMAN_ID, place

FIXTURE_RECORDINGS = Path(__file__).parent / "fixtures"
GATEWAY = {"id": CRIO_ID, "name": "gateway", "image": "ghcr.io/example/mcp-gateway:1.4.2", "runtime": "cri-o",
           "pod": "mcp-gateway-5f7d9c-x2k8q", "namespace": "agents", "pod_uid": CRIO_POD}


def pod_alert(**fields) -> dict:
    return {"kind": "alert", "state": "firing", "rule": "accumulating", "severity": "warning",
            "signature": "sleep <n>", "spawner": {"pid": 4242, "ppid": 1, "argv": ["sh", "-c", "loop"], "comm": "sh"},
            "container": GATEWAY, "live": 12, "spawned": 12, "exited": 0, "zombies": 0, "orphans": 0, "rss_bytes": 0,
            "pids": [], "message": "warning: ...", "containers": [], "pids_limit": None, **fields}


def test_the_resolver_names_a_pods_container_from_its_runtimes_state(tmp_path: Path) -> None:
    fake = FakeHost(tmp_path)
    state = tmp_path / "host"
    place(state, f"run/containers/storage/overlay-containers/{CRIO_ID}/userdata/config.json",
          FIXTURES / "crio" / "container.config.json")
    cgroup = f"/kubepods/burstable/pod{CRIO_POD}/crio-{CRIO_ID}"
    cgroup_id = fake.cgroup(cgroup)
    fake.process(100, f"0::{cgroup}\n")
    resolver = fake.resolver(host_root=str(state))
    assert resolver(cgroup_id, 100) == GATEWAY
    settled, info = resolver.lookup(cgroup_id, 100)
    assert settled and (info.pod, info.namespace, info.name) == ("mcp-gateway-5f7d9c-x2k8q", "agents", "gateway")


def test_a_pods_container_whose_state_is_unreadable_shows_by_id_and_is_asked_about_again(tmp_path: Path) -> None:
    fake = FakeHost(tmp_path)
    cgroup = f"/kubepods/besteffort/pod{CONTAINERD_POD}/{CONTAINERD_ID}"
    cgroup_id = fake.cgroup(cgroup)
    fake.process(100, f"0::{cgroup}\n")
    resolver = fake.resolver(host_root=str(tmp_path / "no-state"))
    assert resolver(cgroup_id, 100) == {"id": CONTAINERD_ID, "name": CONTAINERD_ID[:12], "image": None,
                                        "runtime": "kubernetes"}
    assert resolver.lookup(cgroup_id, 100)[0] is False  # unsettled: the state may be readable later


def test_the_pod_is_named_in_the_alert_message_the_human_view_and_alertmanagers_labels() -> None:
    assert where(GATEWAY, None) == "container gateway of pod agents/mcp-gateway-5f7d9c-x2k8q"
    shown = render_alert(pod_alert())
    assert f"container gateway (pod agents/mcp-gateway-5f7d9c-x2k8q, cri-o {CRIO_ID}, image " in shown
    labels = alert_labels(pod_alert(), "node-1")
    assert (labels["container"], labels["namespace"], labels["pod"]) == ("gateway", "agents", "mcp-gateway-5f7d9c-x2k8q")
    docker = alert_labels(pod_alert(container={"id": "ab" * 32, "name": "mcp", "image": "x", "runtime": "docker"}), "h")
    assert "pod" not in docker and "namespace" not in docker


def test_metrics_label_alerts_and_pids_limits_by_namespace_and_pod() -> None:
    metrics = Metrics()
    try:
        metrics.send(pod_alert())
        metrics.send({"kind": "progress", "pids_limits": [
            {"container": "gateway", "namespace": "agents", "pod": "mcp-gateway-5f7d9c-x2k8q", "cgroup": "",
             "current": 52, "limit": 64, "refused": 3},
            {"container": "mcp", "cgroup": "", "current": 1, "limit": 8, "refused": 0},  # an older record's row
        ]})
        pod = {"container": "gateway", "namespace": "agents", "pod": "mcp-gateway-5f7d9c-x2k8q"}
        sample = metrics.registry.get_sample_value
        assert sample("spawnwatch_alert_firing", {**pod, "rule": "accumulating", "signature": "sleep <n>"}) == 1.0
        assert sample("spawnwatch_alert_live", {**pod, "rule": "accumulating", "signature": "sleep <n>"}) == 12.0
        assert sample("spawnwatch_pids_refused_forks_total", {**pod, "cgroup": ""}) == 3.0
        assert sample("spawnwatch_pids_limit", {"container": "mcp", "namespace": "", "pod": "", "cgroup": ""}) == 8.0
    finally:
        metrics.close()


def test_a_pod_is_selected_by_its_name_or_namespace_and_name() -> None:
    assert container_matches(GATEWAY, "mcp-gateway-5f7d9c-x2k8q")
    assert container_matches(GATEWAY, "agents/mcp-gateway-5f7d9c-x2k8q")
    assert container_matches(GATEWAY, "gateway") and container_matches(GATEWAY, CRIO_ID[:12])
    assert not container_matches(GATEWAY, "default/mcp-gateway-5f7d9c-x2k8q")
    assert not container_matches({"id": PODMAN_ID, "name": "web", "image": None, "runtime": "podman"}, "None/web")


def test_report_groups_containers_by_pod() -> None:
    gib = 1 << 30

    def pod_container(container_id: str, name: str, used: int) -> ContainerFacts:
        info = ContainerInfo(id=container_id, name=name, runtime="containerd", pod="gw-0", namespace="agents",
                             pod_uid=CONTAINERD_POD)
        return ContainerFacts(info, CgroupMemory(used=used, limit=None), processes=3)

    facts = Facts(host_memory=HostMemory(total=16 * gib, used=4 * gib, free=gib, cache=gib), host_processes=10,
                  containers=(pod_container("a" * 64, "gateway", gib), pod_container("b" * 64, "sidecar", gib // 2),
                              ContainerFacts(ContainerInfo(id="c" * 64, name="web"), None, processes=1)),
                  groups=(), docker_available=False)
    report = build(facts)
    assert report["pods"] == [{"namespace": "agents", "pod": "gw-0", "pod_uid": CONTAINERD_POD,
                               "containers": ["gateway", "sidecar"], "memory_bytes": gib + gib // 2, "processes": 6,
                               "leaks": 0}]
    assert [(c["name"], c["runtime"], c["pod"]) for c in report["containers"]] == [
        ("gateway", "containerd", "gw-0"), ("sidecar", "containerd", "gw-0"), ("web", "docker", None)]
    assert "agents/gw-0" in render(report)


def test_doctors_survey_finds_each_runtime_and_counts_the_containers_its_state_names(tmp_path: Path) -> None:
    place(tmp_path, f"run/containerd/io.containerd.runtime.v2.task/k8s.io/{CONTAINERD_ID}/config.json",
          FIXTURES / "containerd" / "container.config.json")
    (tmp_path / "var/lib/containers/storage").mkdir(parents=True)
    refs = [parse_cgroup_path(f"/kubepods/besteffort/pod{CONTAINERD_POD}/{CONTAINERD_ID}"),
            parse_cgroup_path(f"/kubepods/besteffort/pod{CONTAINERD_POD}/{'e' * 64}"),  # no state names it
            parse_cgroup_path(f"/docker/{'d' * 64}")]  # the engine's to name: not surveyed
    assert survey(refs, str(tmp_path)) == [
        RuntimeFound("podman", "/var/lib/containers/storage", 0, 0),
        RuntimeFound("containerd", "/run/containerd/io.containerd.runtime.v2.task", 1, 1),
        RuntimeFound("kubernetes", "", 1, 0, unnamed=("e" * 64,)),  # its id, to look it up by
    ]


def test_an_older_recordings_replay_names_its_containers_as_dockers(tmp_path: Path) -> None:
    # A `watch --record` made before runtimes were named: its alerts' containers say no runtime.
    old = {"id": "ab" * 32, "name": "metamcp", "image": "metamcp:1"}
    expected = [json.loads(line) for line in (FIXTURE_RECORDINGS / "accumulate.expected.jsonl").read_text().splitlines()]
    recording = tmp_path / "old.msgpack"
    with RecordingWriter(recording) as writer:
        for record in read_records(FIXTURE_RECORDINGS / "accumulate.msgpack"):
            writer.write(record)
        for alert in expected:
            writer.write({**alert, "container": old})
    result = CliRunner().invoke(main, ["watch", "--replay", str(recording), "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    replayed = [r for r in map(json.loads, result.stdout.splitlines()) if r.get("kind") == "alert"]
    assert len(replayed) == len(expected) and all(r["container"] == {**old, "runtime": "docker"} for r in replayed)
    shown = CliRunner().invoke(main, ["watch", "--replay", str(recording)], catch_exceptions=False)
    assert f"container metamcp (docker {'ab' * 32}, image metamcp:1)" in shown.stdout + shown.stderr


def test_the_docker_engine_is_asked_of_pods_and_custom_parents_never_of_podmans_or_a_users(tmp_path: Path) -> None:
    class Engine:
        asked: list[str] = []

        def inspect(self, container_id: str):
            self.asked.append(container_id)
            return ContainerInfo(id=container_id, name="by-engine")

    fake = FakeHost(tmp_path)
    engine = Engine()
    resolver = ContainerResolver(engine=engine, cgroup_mount=str(fake.mount), proc_root=str(fake.proc),
                                 host_root=str(tmp_path / "no-state"))
    cgroups = {
        "cri-dockerd pod": (f"/kubepods/besteffort/pod{CONTAINERD_POD}/{'1' * 64}", "by-engine"),
        "custom parent": (f"/mcp/{'2' * 64}", "by-engine"),
        "podman": (f"/machine.slice/libpod-{'3' * 64}.scope", ('3' * 64)[:12]),
        "a user's": (f"/user.slice/user-1000.slice/user@1000.service/app.slice/cri-containerd-{'4' * 64}.scope",
                     ('4' * 64)[:12]),
    }
    for pid, (what, (cgroup, name)) in enumerate(cgroups.items(), 100):
        fake.process(pid, f"0::{cgroup}\n")
        assert resolver(fake.cgroup(cgroup), pid)["name"] == name, what
    assert engine.asked == ["1" * 64, "2" * 64]
