"""`reap` in a pod's container (containerd as on a Kubernetes node, tests/runtimes_env.py):
it ends the processes and says why it leaves the container (the kubelet would start it
again) and what ends it for good (deleting the pod)."""

from __future__ import annotations

import json
import sys
import subprocess

import pytest

from spawnwatch.reap.plan import PROCESSES_ONLY

pytestmark = [pytest.mark.root, pytest.mark.slow]


def reap(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "spawnwatch", "reap", *args], capture_output=True, text=True,
                          timeout=120)


def test_reap_in_a_pods_container_ends_processes_only_and_says_why(containerd_node) -> None:
    pod = containerd_node.run_pod_container(pod="mcp-gateway-7d9f", namespace="tools", container="gateway",
                                            image="registry.local/gateway:1", layout="cgroupfs")
    select = ("--signature", "sleep 600", "--container", pod.id, "--keep", "0", "--force")
    dry = reap(*select, "--json")
    assert dry.returncode == 0, dry.stderr
    record = json.loads(dry.stdout)
    assert [t["pid"] for t in record["targets"]] == [pod.pid] and record["processes_only"] == PROCESSES_ONLY
    human = reap(*select)
    assert human.returncode == 0 and f"note: {PROCESSES_ONLY}" in human.stdout, human.stdout + human.stderr
