"""A leak in a Podman container and in two pods' containers on containerd (namespace
k8s.io, kubelet's cgroupfs and systemd layouts), side by side under one live `watch`: each alert names
its container as Docker's are named (Podman: name, image, runtime) or by pod, namespace
and Kubernetes container name (containerd), in the JSON alert, the human view, the
metrics' label sets, `report`, `tree --container` and the replay of the recording; and
`doctor` finds both runtimes and says their containers are named.

One `watch` serves every test of the module (markers `root`, `slow`): 35-55 s measured
on this loaded machine, most of it bcc's compile and the podman start.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from live import LiveCommand
from spawnwatch.sinks.human import render_alert
from spawnwatch.sinks.prometheus import Metrics

pytestmark = [pytest.mark.root, pytest.mark.slow]

# The accumulating rule's shape (tests/test_container_image.py): a `sleep 1000` kept per 1.1 s.
LEAK = "while true; do sleep 1000 & sleep 1.1; done"
ALERT_TIMEOUT = 180.0  # a deadline, not a measure: the rule needs 9 live children (~12 s here)
POD = "mcp-gateway-7c9f-abcde"
NAMESPACE = "agents"
K8S_CONTAINER = "gateway"
POD_IMAGE = "ghcr.io/example/mcp-gateway:1.4.2"
SYSTEMD_POD = "mcp-gateway-7c9f-fghij"  # the same leak in kubelet's systemd cgroup layout


@dataclass
class Session:
    records: list[dict]  # everything `watch --json` printed
    recording: Path
    podman_id: str
    podman_name: str
    podman_image: str
    pod_container_id: str
    systemd_pod_container_id: str
    report: dict  # `report --json` while both leaked
    tree_by_pod: dict  # `tree --container NAMESPACE/POD --json` then
    tree_by_pod_name: dict  # `tree --container POD --json` then
    doctor: dict[str, dict]  # `doctor --json` then: its checks by name


def firing(records: list[dict], container_id: str) -> list[dict]:
    return [r for r in records if r.get("kind") == "alert" and r["state"] == "firing"
            and r["rule"] == "accumulating" and (r["container"] or {}).get("id") == container_id]


def spawnwatch(*args: str) -> list[dict]:
    result = subprocess.run([sys.executable, "-m", "spawnwatch", *args], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return [json.loads(line) for line in result.stdout.splitlines()]


@pytest.fixture(scope="module")
def session(podman_session, containerd_node, tmp_path_factory) -> Session:
    scratch = tmp_path_factory.mktemp("runtime-leaks")
    config = scratch / "config.toml"
    config.write_text(f'[runtimes]\ncontainerd_state = "{containerd_node.state}"\n')
    recording = scratch / "leaks.msgpack"
    podman_name = f"spawnwatch-leak-{uuid.uuid4().hex[:8]}"
    with LiveCommand("watch", "--json", "--config", str(config), "--record", str(recording),
                     ready_timeout=300) as watch:
        podman_id = podman_session.run("sh", "-c", LEAK, name=podman_name)
        pod = containerd_node.run_pod_container(pod=POD, namespace=NAMESPACE, container=K8S_CONTAINER,
                                                image=POD_IMAGE, layout="cgroupfs",
                                                command=("/bin/sh", "-c", LEAK))
        systemd_pod = containerd_node.run_pod_container(pod=SYSTEMD_POD, namespace=NAMESPACE, container=K8S_CONTAINER,
                                                        image=POD_IMAGE, layout="systemd",
                                                        command=("/bin/sh", "-c", LEAK))
        try:
            try:
                watch.wait_for(lambda rs: all(firing(rs, c) for c in (podman_id, pod.id, systemd_pod.id)),
                               "accumulating alerts for the three containers", timeout=ALERT_TIMEOUT)
            except AssertionError as exc:
                ours = [(a["container"], a["spawner"]["argv"]) for a in watch.snapshot()
                        if a.get("kind") == "alert" and a["signature"] == "sleep <n>"]
                raise AssertionError(f"{exc}; the `sleep <n>` alerts: {ours}") from None
            [report] = spawnwatch("report", "--json", "--config", str(config))
            [tree_by_pod] = spawnwatch("tree", "--json", "--config", str(config), "--container", f"{NAMESPACE}/{POD}")
            [tree_by_pod_name] = spawnwatch("tree", "--json", "--config", str(config), "--container", POD)
            doctor = {check["name"]: check for check in spawnwatch("doctor", "--json", "--config", str(config))}
        finally:
            podman_session.remove(podman_id)
            for started in (pod, systemd_pod):
                containerd_node.ctr("task", "kill", "--signal", "SIGKILL", started.id, check=False)
    return Session(watch.records, recording, podman_id, podman_name, podman_session.image, pod.id, systemd_pod.id,
                   report, tree_by_pod, tree_by_pod_name, doctor)


def test_a_leak_in_a_podman_container_is_named_like_a_docker_one(session: Session) -> None:
    alert = firing(session.records, session.podman_id)[0]
    assert alert["container"] == {"id": session.podman_id, "name": session.podman_name,
                                  "image": session.podman_image, "runtime": "podman"}
    assert alert["signature"] == "sleep <n>" and alert["live"] >= 9
    assert f"container {session.podman_name} (podman {session.podman_id}" in render_alert(alert)


def test_a_leak_in_a_pods_container_on_containerd_names_pod_namespace_and_container(session: Session) -> None:
    alert = firing(session.records, session.pod_container_id)[0]
    container = alert["container"]
    assert {key: container[key] for key in ("id", "name", "image", "runtime", "pod", "namespace")} == {
        "id": session.pod_container_id, "name": K8S_CONTAINER, "image": POD_IMAGE, "runtime": "containerd",
        "pod": POD, "namespace": NAMESPACE}
    assert container["pod_uid"]
    assert alert["signature"] == "sleep <n>" and alert["live"] >= 9
    assert (f"container {K8S_CONTAINER} (pod {NAMESPACE}/{POD}, containerd {session.pod_container_id}"
            in render_alert(alert))


def test_the_same_leak_in_kubelets_systemd_layout_is_named_by_its_pod(session: Session) -> None:
    container = firing(session.records, session.systemd_pod_container_id)[0]["container"]
    assert (container["name"], container["pod"], container["namespace"], container["runtime"]) == (
        K8S_CONTAINER, SYSTEMD_POD, NAMESPACE, "containerd")


def test_the_metrics_label_each_alert_by_container_pod_and_namespace(session: Session) -> None:
    metrics = Metrics()
    try:
        for alert in firing(session.records, session.podman_id)[:1] + firing(session.records, session.pod_container_id)[:1]:
            metrics.send(alert)
        labels = {"rule": "accumulating", "signature": "sleep <n>"}
        on_pod = metrics.registry.get_sample_value(
            "spawnwatch_alert_firing", {**labels, "container": K8S_CONTAINER, "namespace": NAMESPACE, "pod": POD})
        on_podman = metrics.registry.get_sample_value(
            "spawnwatch_alert_firing", {**labels, "container": session.podman_name, "namespace": "", "pod": ""})
        assert (on_pod, on_podman) == (1.0, 1.0)
    finally:
        metrics.close()


def test_report_groups_the_pods_containers_by_pod(session: Session) -> None:
    [pod] = [p for p in session.report["pods"] if p["pod"] == POD]
    assert pod["namespace"] == NAMESPACE and pod["containers"] == [K8S_CONTAINER] and pod["processes"] >= 9
    [container] = [c for c in session.report["containers"] if c["id"] == session.pod_container_id]
    assert (container["name"], container["runtime"], container["pod"], container["namespace"]) == (
        K8S_CONTAINER, "containerd", POD, NAMESPACE)
    assert any(g["signature"] == "sleep <n>" for g in container["groups"])
    [podman] = [c for c in session.report["containers"] if c["id"] == session.podman_id]
    assert (podman["name"], podman["runtime"], podman["pod"]) == (session.podman_name, "podman", None)


def test_tree_takes_a_pod_by_name_or_by_namespace_and_name(session: Session) -> None:
    for tree in (session.tree_by_pod, session.tree_by_pod_name):
        [root] = tree["roots"]
        assert root["container"]["pod"] == POD and root["container"]["id"] == session.pod_container_id
        assert any(child["signature"] == "sleep <n>" and child["count"] >= 9 for child in root["children"])


def test_the_recording_replays_to_alerts_naming_the_same_containers(session: Session) -> None:
    replay = subprocess.run([sys.executable, "-m", "spawnwatch", "watch", "--replay", str(session.recording), "--json"],
                            capture_output=True, text=True, timeout=300)
    assert replay.returncode == 0, replay.stderr[-2000:]
    replayed = [json.loads(line) for line in replay.stdout.splitlines()]
    for container_id in (session.podman_id, session.pod_container_id, session.systemd_pod_container_id):
        live = firing(session.records, container_id)[0]
        assert firing(replayed, container_id)[0]["container"] == live["container"]


def test_doctor_lists_each_runtime_found_and_that_its_containers_are_named(session: Session) -> None:
    podman, containerd = session.doctor["podman"], session.doctor["containerd"]
    assert podman["ok"] and "/var/lib/containers/storage" in podman["detail"]
    assert containerd["ok"] and "are named from its state" in containerd["detail"], containerd
    assert "are named from its state" in podman["detail"]
