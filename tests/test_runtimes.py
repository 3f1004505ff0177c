"""Every container runtime named from its own state on disk (spawnwatch.adapters.runtimes):
cgroup layouts, recorded state files laid out under a temporary host root (CRI-O's are
written from its documentation, tests/fixtures/runtimes/README.md), hostile state, and
real Podman and containerd containers (markers `root`, `slow`)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import uuid
from pathlib import Path

import pytest

from conftest import wait_for
from runtimes_env import SESSION

from spawnwatch.adapters.cgroups import (
    CgroupContainer,
    cgroup2_mount,
    container_of_proc,
    parse_cgroup_path,
    populated,
    read_proc_cgroups,
)
from spawnwatch.adapters.runtimes import RuntimeNames, containerd, crio, find, podman
from spawnwatch.cli.doctor import running_containers

FIXTURES = Path(__file__).parent / "fixtures" / "runtimes"
PODMAN_ID = "01b8ecd5fb7f7ee1116f094993f11d7b62ca3bd64025b34955d80f2ceb4fb610"
CONTAINERD_ID = "1733e7a76be7ee5c026275bb563de617e1e5723164a1f07903469a320d5a67a4"
CONTAINERD_POD = "4fe556a4-0bd7-45be-966f-46e2cbf4c4ac"
CRIO_ID = "9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d9c8b7a6f5e4d3c2b1a0f9e8d"
CRIO_SANDBOX = "1f2e3d4c5b6a79808f9e0d1c2b3a49586f7e8d9c0b1a2f3e4d5c6b7a8f9e0d1c"
CRIO_POD = "7d1c2b3a-4e5f-4a6b-8c9d-0e1f2a3b4c5d"
# The rootless user: this test's own uid, or 1000 when the tests run as root (whose
# home passwd gives as /root).
UID = os.getuid() or 1000


def slice_uid(pod_uid: str) -> str:
    return pod_uid.replace("-", "_")


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        # rootless Podman under the user's systemd manager: the uid says whose state names it
        (f"/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{PODMAN_ID}.scope",
         CgroupContainer(PODMAN_ID, "podman", None, 1000)),
        (f"/user.slice/user-1000.slice/user@1000.service/user.slice/user-libpod_pod_{'ab' * 32}.slice/"
         f"libpod-{PODMAN_ID}.scope/container", CgroupContainer(PODMAN_ID, "podman", None, 1000)),
        # a cgroup a user named like someone else's container is still theirs
        (f"/user.slice/user-1000.slice/user@1000.service/app.slice/cri-containerd-{CONTAINERD_ID}.scope",
         CgroupContainer(CONTAINERD_ID, "containerd", None, 1000)),
        (f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{slice_uid(CONTAINERD_POD)}.slice/"
         f"cri-containerd-{CONTAINERD_ID}.scope", CgroupContainer(CONTAINERD_ID, "containerd", CONTAINERD_POD)),
        (f"/kubepods/besteffort/pod{CONTAINERD_POD}/{CONTAINERD_ID}",
         CgroupContainer(CONTAINERD_ID, "kubernetes", CONTAINERD_POD)),
        (f"/kubepods/burstable/pod{CRIO_POD}/crio-{CRIO_ID}", CgroupContainer(CRIO_ID, "cri-o", CRIO_POD)),
        (f"/kubepods/pod{CRIO_POD}/crio-{CRIO_ID}", CgroupContainer(CRIO_ID, "cri-o", CRIO_POD)),
        # conmon's own cgroup beside the container is not the container
        (f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{slice_uid(CRIO_POD)}.slice/"
         f"crio-conmon-{CRIO_ID}.scope", None),
        (f"/machine.slice/libpod-conmon-{PODMAN_ID}.scope", None),
    ],
)
def test_cgroup_layouts_of_rootless_podman_and_pods(path: str, expected: CgroupContainer | None) -> None:
    assert parse_cgroup_path(path) == expected


# --- a host laid out from recorded state -------------------------------------------------------


def place(host: Path, relative: str, source: Path | str) -> Path:
    target = host / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(source, Path):
        shutil.copy(source, target)
    else:
        target.write_text(source)
    return target


@pytest.fixture
def host(tmp_path: Path) -> Path:
    place(tmp_path, "etc/passwd",
          f"root:x:0:0:root:/root:/bin/sh\nalice:x:{UID}:{UID}:Alice:/home/alice:/bin/sh\n")
    return tmp_path


def own(host: Path) -> None:
    """Give alice's home to alice, as her podman would have made it."""
    if os.getuid() == 0:
        for directory, dirs, files in os.walk(host / "home/alice"):
            for name in (directory, *(os.path.join(directory, entry) for entry in dirs + files)):
                os.lchown(name, UID, UID)


def rootless_ref(container_id: str = PODMAN_ID) -> CgroupContainer:
    return parse_cgroup_path(f"/user.slice/user-{UID}.slice/user@{UID}.service/user.slice/libpod-{container_id}.scope")


ROOTLESS_LIST = "home/alice/.local/share/containers/storage/overlay-containers/containers.json"
ROOTFUL_LIST = "var/lib/containers/storage/overlay-containers/containers.json"


def test_a_rootful_podman_container_is_named_from_containers_json(host: Path) -> None:
    place(host, ROOTFUL_LIST, FIXTURES / "podman" / "containers.json")
    ref = parse_cgroup_path(f"/libpod_parent/libpod-{PODMAN_ID}")
    assert find(ref, str(host)) == RuntimeNames("podman", PODMAN_ID, name="rt-probe",
                                                image="localhost/spawnwatch-busybox:rt")


def test_a_rootless_podman_container_is_named_from_its_users_storage_only(host: Path) -> None:
    place(host, ROOTFUL_LIST, FIXTURES / "podman" / "containers.json")
    assert find(rootless_ref(), str(host)) is None  # root's containers never name a user's cgroup
    place(host, ROOTLESS_LIST, FIXTURES / "podman" / "containers.json")
    own(host)
    assert find(rootless_ref(), str(host)) == RuntimeNames("podman", PODMAN_ID, name="rt-probe",
                                                           image="localhost/spawnwatch-busybox:rt")


def test_a_link_planted_in_a_users_storage_is_not_followed(host: Path, tmp_path_factory) -> None:
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    place(elsewhere, "storage/overlay-containers/containers.json", FIXTURES / "podman" / "containers.json")
    (host / "home/alice/.local/share/containers").mkdir(parents=True)
    (host / "home/alice/.local/share/containers/storage").symlink_to(elsewhere / "storage")
    own(host)
    assert podman.names(rootless_ref(), str(host)) is None
    shutil.rmtree(host / "home/alice/.local")
    listed = place(elsewhere, "containers.json", FIXTURES / "podman" / "containers.json")
    (host / ROOTLESS_LIST).parent.mkdir(parents=True)
    (host / ROOTLESS_LIST).symlink_to(listed)
    own(host)
    assert podman.names(rootless_ref(), str(host)) is None


@pytest.mark.root
def test_a_file_of_another_user_in_a_users_storage_is_not_taken_as_theirs(host: Path) -> None:
    listed = place(host, ROOTLESS_LIST, FIXTURES / "podman" / "containers.json")
    own(host)
    os.chown(listed, UID + 1, UID + 1)  # a hard link to a file of someone else's looks like this
    assert podman.names(rootless_ref(), str(host)) is None


@pytest.mark.parametrize("hostile", ["fifo", "huge", "deep", "not a list", "wrong types"])
def test_hostile_state_reads_as_unknown(host: Path, hostile: str) -> None:
    target = host / ROOTLESS_LIST
    target.parent.mkdir(parents=True)
    if hostile == "fifo":
        os.mkfifo(target)  # opening it for reading would block without O_NONBLOCK
    elif hostile == "huge":
        with open(target, "wb") as f:
            f.truncate(podman.CONTAINERS_LIMIT + 1)
    elif hostile == "deep":
        target.write_text("[" * 100_000 + "]" * 100_000)
    elif hostile == "not a list":
        target.write_text(json.dumps({"id": PODMAN_ID}))
    else:
        target.write_text(json.dumps([{"id": PODMAN_ID, "names": [7], "metadata": "{[", "image": {"a": 1}}]))
    own(host)
    answer: list = []
    reader = threading.Thread(target=lambda: answer.append(find(rootless_ref(), str(host))), daemon=True)
    reader.start()
    reader.join(timeout=60)
    assert not reader.is_alive(), "reading the state blocked"
    expected = RuntimeNames("podman", PODMAN_ID) if hostile == "wrong types" else None
    assert answer == [expected]


def test_a_pods_container_on_containerd_is_named_in_both_layouts(host: Path) -> None:
    place(host, f"run/containerd/io.containerd.runtime.v2.task/k8s.io/{CONTAINERD_ID}/config.json",
          FIXTURES / "containerd" / "container.config.json")
    expected = RuntimeNames("containerd", CONTAINERD_ID, name="test-pod-9240", image="mirror.gcr.io/library/alpine:latest",
                            pod="test-pod-9240", namespace="default", pod_uid=CONTAINERD_POD, runtime_namespace="k8s.io")
    systemd = (f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{slice_uid(CONTAINERD_POD)}.slice/"
               f"cri-containerd-{CONTAINERD_ID}.scope")
    cgroupfs = f"/kubepods/besteffort/pod{CONTAINERD_POD}/{CONTAINERD_ID}"
    assert find(parse_cgroup_path(systemd), str(host)) == expected
    assert find(parse_cgroup_path(cgroupfs), str(host)) == expected


def test_a_containerd_container_outside_kubernetes_says_its_namespace(host: Path) -> None:
    place(host, f"run/containerd/io.containerd.runtime.v2.task/default/{CONTAINERD_ID}/config.json",
          json.dumps({"ociVersion": "1.0.2-dev", "annotations": {}}))
    assert find(parse_cgroup_path(f"/default/{CONTAINERD_ID}"), str(host)) == RuntimeNames(
        "containerd", CONTAINERD_ID, runtime_namespace="default")


def test_a_users_cgroup_named_like_a_pods_container_is_not_named_from_root_state(host: Path) -> None:
    place(host, f"run/containerd/io.containerd.runtime.v2.task/k8s.io/{CONTAINERD_ID}/config.json",
          FIXTURES / "containerd" / "container.config.json")
    forged = parse_cgroup_path(f"/user.slice/user-{UID}.slice/user@{UID}.service/app.slice/"
                               f"cri-containerd-{CONTAINERD_ID}.scope")
    assert find(forged, str(host)) is None


def test_a_pods_container_and_sandbox_on_crio_are_named_in_both_layouts(host: Path) -> None:
    place(host, f"var/lib/containers/storage/overlay-containers/{CRIO_ID}/userdata/config.json",
          FIXTURES / "crio" / "container.config.json")
    place(host, f"run/containers/storage/overlay-containers/{CRIO_SANDBOX}/userdata/config.json",
          FIXTURES / "crio" / "sandbox.config.json")
    systemd = (f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{slice_uid(CRIO_POD)}.slice/"
               f"crio-{CRIO_ID}.scope")
    assert find(parse_cgroup_path(systemd), str(host)) == RuntimeNames(
        "cri-o", CRIO_ID, name="gateway", image="ghcr.io/example/mcp-gateway:1.4.2",
        pod="mcp-gateway-5f7d9c-x2k8q", namespace="agents", pod_uid=CRIO_POD)
    sandbox = find(parse_cgroup_path(f"/kubepods/burstable/pod{CRIO_POD}/crio-{CRIO_SANDBOX}"), str(host))
    assert sandbox == RuntimeNames("cri-o", CRIO_SANDBOX, name="POD", pod="mcp-gateway-5f7d9c-x2k8q",
                                   namespace="agents", pod_uid=CRIO_POD, sandbox=True)
    # a bare id under a pod (cgroupfs, either runtime): containerd has none, CRI-O answers
    bare = parse_cgroup_path(f"/kubepods/burstable/pod{CRIO_POD}/{CRIO_ID}")
    assert find(bare, str(host)).pod == "mcp-gateway-5f7d9c-x2k8q"


def test_podmans_own_spec_in_the_shared_storage_is_not_taken_for_crio(host: Path) -> None:
    spec = {"annotations": {"io.container.manager": "libpod", "io.kubernetes.cri-o.ContainerType": "container",
                            "io.kubernetes.cri-o.Created": "2026-12-07T04:51:24Z"}}
    place(host, f"var/lib/containers/storage/overlay-containers/{CRIO_ID}/userdata/config.json", json.dumps(spec))
    assert crio.names(parse_cgroup_path(f"/kubepods/pod{CRIO_POD}/crio-{CRIO_ID}"), str(host)) is None


def test_unknown_containers_and_docker_are_not_named_here(host: Path) -> None:
    assert find(parse_cgroup_path(f"/libpod_parent/libpod-{PODMAN_ID}"), str(host)) is None
    assert find(parse_cgroup_path(f"/kubepods/besteffort/pod{CRIO_POD}/{CRIO_ID}"), str(host)) is None
    assert find(parse_cgroup_path(f"/docker/{PODMAN_ID}"), str(host)) is None  # the engine names Docker's
    assert containerd.names(parse_cgroup_path(f"/libpod_parent/libpod-{PODMAN_ID}"), str(host)) is None


# --- real runtimes ------------------------------------------------------------------------------


def ref_of(pid: int) -> CgroupContainer:
    cgroups = read_proc_cgroups(pid)
    assert cgroups is not None, f"process {pid} is gone"
    ref, _ = container_of_proc(cgroups)
    assert ref is not None, f"no container in {cgroups}"
    return ref


@pytest.mark.root
@pytest.mark.slow
def test_a_real_podman_container_is_named_from_podmans_state(podman_env) -> None:
    # Unique: a run killed before its clean-up leaves its container, and its name taken, behind.
    name = f"spawnwatch-test-podman-names-{SESSION}"
    container_id = podman_env.run("sleep", "600", name=name)
    ref = ref_of(podman_env.pid(container_id))
    assert (ref.id, ref.runtime) == (container_id, "podman")
    assert find(ref) == RuntimeNames("podman", container_id, name=name, image=podman_env.image)


@pytest.mark.root
@pytest.mark.slow
@pytest.mark.parametrize("layout", ["cgroupfs", "systemd"])
def test_a_real_pods_container_on_containerd_is_named(containerd_node, layout: str) -> None:
    started = containerd_node.run_pod_container(pod="mcp-gateway-7c9f-abcde", namespace="agents",
                                                container="gateway", image="ghcr.io/example/mcp-gateway:1.4.2",
                                                layout=layout)
    cgroups = read_proc_cgroups(started.pid)
    assert cgroups is not None and started.cgroup in (cgroups.v2_path, *cgroups.v1_paths.values())
    ref = ref_of(started.pid)
    assert (ref.id, ref.pod_uid) == (started.id, started.pod_uid)
    assert find(ref, containerd_state=str(containerd_node.state)) == RuntimeNames(
        "containerd", started.id, name="gateway", image="ghcr.io/example/mcp-gateway:1.4.2",
        pod="mcp-gateway-7c9f-abcde", namespace="agents", pod_uid=started.pod_uid, runtime_namespace="k8s.io")


@pytest.mark.root
def test_doctor_counts_a_pods_cgroup_as_a_running_container_only_while_a_process_is_in_it() -> None:
    """A runtime killed before its clean-up leaves its containers' cgroups behind, empty:
    `doctor` must not report them as running containers it cannot name."""
    mount = cgroup2_mount()
    assert mount is not None
    pod_uid = str(uuid.uuid4())
    container_id = uuid.uuid4().hex + uuid.uuid4().hex
    pod = f"{mount}/kubepods/besteffort/pod{pod_uid}"
    os.makedirs(f"{pod}/{container_id}")
    sleeper = None
    try:
        assert container_id not in running_ids(), "an empty cgroup counted as a running container"
        sleeper = subprocess.Popen(["sleep", "600"])
        with open(f"{pod}/{container_id}/cgroup.procs", "w") as procs:
            procs.write(str(sleeper.pid))
        assert container_id in running_ids()
    finally:
        if sleeper is not None:
            sleeper.kill()
            sleeper.wait()
        wait_for(lambda: not populated(mount, f"{pod[len(mount):]}/{container_id}"), "the sleeper to leave its cgroup")
        os.rmdir(f"{pod}/{container_id}")
        os.rmdir(pod)


def running_ids() -> set[str]:
    return {ref.id for ref in running_containers()}
