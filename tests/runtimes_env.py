"""Real Podman and containerd for the runtime tests (marker `root`, `slow`).

conftest.py loads this module as a plugin.  `podman_env` runs rootful Podman with
scripts/podman-test-runtime (this machine's root lacks CAP_SYS_RESOURCE and Podman
always asks for rlimits) and an image imported from busybox-static (no registry here);
it removes the containers a test started, even when the test failed.

`containerd_node` is a containerd of its own (socket, root and state dirs in a temp dir,
never docker's), on which `run_pod_container` starts a container in namespace `k8s.io`
the way the CRI plugin starts a pod's: the same annotations, labels and cgroup path, in
kubelet's cgroupfs layout (`/kubepods/<qos>/pod<uid>/<id>`) or its systemd one
(`kubepods-<qos>-pod<uid>.slice:cri-containerd:<id>`).  No kubelet and no CRI plugin run:
ctr writes what they would.  Without systemd (as on this machine) the systemd layout is
given to runc as the cgroupfs path the systemd driver would make, so the container's
/proc/<pid>/cgroup reads the same.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest

from conftest import REPO, missing_prerequisite, removing_what_the_test_starts, wait_for

SESSION = uuid.uuid4().hex[:12]
LABEL = "spawnwatch.test"
PODMAN_RUNTIME = REPO / "scripts" / "podman-test-runtime"
BUSYBOX = "/bin/busybox"


def busybox_tree(root: Path) -> Path:
    """A root filesystem of busybox-static and its applets (as scripts/build-test-image.sh lays them)."""
    (root / "bin").mkdir(parents=True)
    (root / "tmp").mkdir(mode=0o1777)
    shutil.copy(BUSYBOX, root / "bin" / "busybox")
    applets = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True, check=True).stdout.split()
    for applet in applets:
        if applet != "busybox":
            (root / "bin" / applet).symlink_to("busybox")
    return root


def _require(*tools: str) -> None:
    if os.geteuid() != 0:
        missing_prerequisite("running containers needs root")
    for tool in tools:
        if shutil.which(tool) is None and not os.path.exists(tool):
            missing_prerequisite(f"{tool} is not installed (sudo make setup)")


# --- Podman -----------------------------------------------------------------------------------


@dataclass
class PodmanEnv:
    image: str
    containers: list[str] = field(default_factory=list)

    def cli(self, *args: str, check: bool = True, stdin: bytes | None = None) -> str:
        result = subprocess.run(["podman", "--runtime", str(PODMAN_RUNTIME), *args],
                                capture_output=True, input=stdin, timeout=180)
        if check and result.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)} failed: {result.stderr.decode().strip()}")
        return result.stdout.decode().strip()

    def run(self, *command: str, name: str | None = None, options: tuple[str, ...] = ()) -> str:
        """Start a detached container of the test image, without network; returns its id."""
        name = name or f"spawnwatch-test-{uuid.uuid4().hex[:8]}"
        container_id = self.cli("run", "-d", "--network", "none", "--label", f"{LABEL}={SESSION}",
                                "--name", name, *options, self.image, *command)
        self.containers.append(container_id)
        return container_id

    def pid(self, container_id: str) -> int:
        return int(self.cli("inspect", "-f", "{{.State.Pid}}", container_id))

    def remove(self, container_id: str) -> None:
        self.cli("rm", "-f", "-t", "0", container_id, check=False)


@pytest.fixture(scope="session")
def podman_session() -> Iterator[PodmanEnv]:
    _require("podman", "runc", BUSYBOX)
    digest = subprocess.run(["sha256sum", BUSYBOX], capture_output=True, text=True, check=True).stdout[:16]
    env = PodmanEnv(image=f"localhost/spawnwatch-busybox:{digest}")
    if subprocess.run(["podman", "image", "exists", env.image], capture_output=True).returncode != 0:
        with tempfile.TemporaryDirectory() as scratch:
            tree = busybox_tree(Path(scratch) / "root")
            tarball = subprocess.run(["tar", "-C", str(tree), "-c", "."], capture_output=True, check=True).stdout
        env.cli("import", "--change", "ENV PATH=/bin", "-", env.image, stdin=tarball)
    try:
        yield env
    finally:
        leftovers = env.cli("ps", "-aq", "--filter", f"label={LABEL}={SESSION}", check=False).split()
        if leftovers:
            env.cli("rm", "-f", "-t", "0", *leftovers, check=False)


@pytest.fixture
def podman_env(podman_session: PodmanEnv) -> Iterator[PodmanEnv]:
    yield from removing_what_the_test_starts(podman_session)


# --- containerd as on a Kubernetes node ---------------------------------------------------------


@dataclass(frozen=True)
class PodContainer:
    id: str
    pid: int
    pod_uid: str
    cgroup: str  # the cgroup path runc was given, as /proc/<pid>/cgroup shows it


class ContainerdNode:
    NAMESPACE = "k8s.io"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.socket = root / "containerd.sock"
        self.state = root / "state"
        self.rootfs = busybox_tree(root / "rootfs")
        self.process: subprocess.Popen | None = None
        self.pod_cgroups: list[str] = []
        self.systemd = os.path.isdir("/run/systemd/system")

    def ctr(self, *args: str, check: bool = True) -> str:
        result = subprocess.run(["ctr", "--address", str(self.socket), "--namespace", self.NAMESPACE, *args],
                                capture_output=True, text=True, timeout=120)
        if check and result.returncode != 0:
            raise AssertionError(f"ctr {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout

    def start(self) -> None:
        config = self.root / "config.toml"
        config.write_text(
            "version = 2\n"
            f'root = "{self.root / "root"}"\n'
            f'state = "{self.state}"\n'
            # No kubelet talks to it: the CRI plugin would only open a second socket.
            'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
            f'[grpc]\n  address = "{self.socket}"\n'
            f'[ttrpc]\n  address = "{self.socket}.ttrpc"\n'
        )
        log = open(self.root / "containerd.log", "ab")
        self.process = subprocess.Popen(["containerd", "--config", str(config)], stdin=subprocess.DEVNULL,
                                        stdout=log, stderr=log, start_new_session=True)
        log.close()
        deadline = time.monotonic() + 60
        while "Server" not in self.ctr("version", check=False):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"containerd did not answer: {(self.root / 'containerd.log').read_text()[-2000:]}")
            time.sleep(0.2)

    def run_pod_container(self, *, pod: str, namespace: str, container: str, image: str,
                          layout: str, qos: str = "besteffort",
                          command: tuple[str, ...] = ("/bin/sleep", "600")) -> PodContainer:
        """Start `command` as the CRI plugin starts a pod's container; `layout`: cgroupfs or systemd."""
        container_id = uuid.uuid4().hex + uuid.uuid4().hex
        pod_uid = str(uuid.uuid4())
        slice_uid = pod_uid.replace("-", "_")
        systemd_options: tuple[str, ...] = ()
        if layout == "cgroupfs":
            cgroup = given = f"/kubepods/{qos}/pod{pod_uid}/{container_id}"
            self.pod_cgroups.append(f"/kubepods/{qos}/pod{pod_uid}")
        elif layout == "systemd":
            pod_slice = f"kubepods-{qos}-pod{slice_uid}.slice"
            cgroup = f"/kubepods.slice/kubepods-{qos}.slice/{pod_slice}/cri-containerd-{container_id}.scope"
            if self.systemd:
                given, systemd_options = f"{pod_slice}:cri-containerd:{container_id}", ("--runc-systemd-cgroup",)
            else:
                given = cgroup
                self.pod_cgroups.append(f"/kubepods.slice/kubepods-{qos}.slice/{pod_slice}")
        else:
            raise ValueError(layout)
        sandbox_id = uuid.uuid4().hex + uuid.uuid4().hex
        annotations = {
            "io.kubernetes.cri.container-type": "container",
            "io.kubernetes.cri.container-name": container,
            "io.kubernetes.cri.sandbox-id": sandbox_id,
            "io.kubernetes.cri.sandbox-name": pod,
            "io.kubernetes.cri.sandbox-namespace": namespace,
            "io.kubernetes.cri.sandbox-uid": pod_uid,
            "io.kubernetes.cri.image-name": image,
        }
        labels = {
            "io.cri-containerd.kind": "container",
            "io.kubernetes.container.name": container,
            "io.kubernetes.pod.name": pod,
            "io.kubernetes.pod.namespace": namespace,
            "io.kubernetes.pod.uid": pod_uid,
        }
        options = [*systemd_options, "--cgroup", given]
        for key, value in annotations.items():
            options += ["--annotation", f"{key}={value}"]
        for key, value in labels.items():
            options += ["--label", f"{key}={value}"]
        # --rootfs: the container runs on a directory, not an image (none can be pulled here).
        self.ctr("run", "--detach", "--null-io", "--rootfs", *options, str(self.rootfs), container_id, *command)
        pid = wait_for(lambda: self._pid(container_id), f"the task of {container_id}")
        return PodContainer(container_id, pid, pod_uid, cgroup)

    def _pid(self, container_id: str) -> int | None:
        for line in self.ctr("task", "ls").splitlines()[1:]:
            fields = line.split()
            if len(fields) >= 3 and fields[0] == container_id and fields[2] == "RUNNING":
                return int(fields[1])
        return None

    def remove_all(self) -> None:
        for line in self.ctr("task", "ls", check=False).splitlines()[1:]:
            self.ctr("task", "kill", "--signal", "SIGKILL", line.split()[0], check=False)
        for container_id in self.ctr("containers", "ls", "--quiet", check=False).split():
            wait_for(lambda: self._stopped(container_id), f"{container_id} to stop")
            self.ctr("task", "delete", "--force", container_id, check=False)
            self.ctr("containers", "delete", container_id, check=False)
        for path in self.pod_cgroups:
            _remove_cgroup(path)

    def _stopped(self, container_id: str) -> bool:
        return not any(line.split()[:1] == [container_id] and "RUNNING" in line
                       for line in self.ctr("task", "ls", check=False).splitlines())

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=60)
            self.process = None


def _remove_cgroup(path: str) -> None:
    """rmdir the (now empty) pod cgroup runc made in every hierarchy; never above the pod."""
    with open("/proc/self/mounts") as f:
        mounts = [line.split()[1] for line in f if line.split()[2] in ("cgroup", "cgroup2")]
    for mount in mounts:
        try:
            os.rmdir(mount + path)
        except OSError:
            pass


@pytest.fixture(scope="session")
def containerd_node() -> Iterator[ContainerdNode]:
    _require("containerd", "ctr", "runc", BUSYBOX)
    # A short path: the socket's must fit in sun_path (108 bytes).
    node = ContainerdNode(Path(tempfile.mkdtemp(prefix="sw-ctrd-")))
    node.start()
    try:
        yield node
    finally:
        node.remove_all()
        node.stop()
        shutil.rmtree(node.root, ignore_errors=True)
