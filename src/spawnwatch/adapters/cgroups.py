"""cgroups as the kernel shows them: the cgroup2 mount, /proc/<pid>/cgroup (its one
reader), the cgroup tree, which container a cgroup path names, and the pids controller
(the limit over a cgroup, its tasks, the forks it refused).

A container runtime puts every container in a cgroup whose path names the container
id (`/docker/<id>`, `docker-<id>.scope`, `cri-containerd-<id>.scope`, ...):
`parse_cgroup_path` reads it back.  Nothing here asks an engine.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Iterator

_HEX64 = r"[0-9a-f]{64}"
# One cgroup path segment that names a container on its own, by runtime.
_SCOPE = re.compile(
    rf"^(?P<prefix>docker|cri-containerd|crio|libpod|nerdctl)-(?P<id>{_HEX64})(?:\.scope)?$"
)
_BARE = re.compile(rf"^(?P<id>{_HEX64})$")
_POD = re.compile(r"^(?:kubepods-(?:[a-z]+-)?)?pod(?P<uid>[0-9a-f_-]{36})(?:\.slice)?$")
# systemd's manager of one user: the cgroups below it are that user's to create and name.
_USER_MANAGER = re.compile(r"^user@(?P<uid>[0-9]{1,10})\.service$")
_PREFIX_RUNTIME = {
    "docker": "docker",
    "cri-containerd": "containerd",
    "nerdctl": "containerd",
    "crio": "cri-o",
    "libpod": "podman",
}
# A bare 64-hex segment: the runtime is told by the segments above it.
_PARENT_RUNTIME = {"docker": "docker", "libpod_parent": "podman", "actions_job": "docker"}


@dataclass(frozen=True, slots=True)
class CgroupContainer:
    """A container as a cgroup path reveals it."""

    id: str
    runtime: str  # docker, containerd, cri-o, podman, or "kubernetes" when only the pod tells
    pod_uid: str | None = None
    # The user whose systemd manager holds the cgroup (`user@<uid>.service`): a rootless
    # container of theirs, or a cgroup they named like a container; only their own state
    # may name it.
    owner_uid: int | None = None


def parse_cgroup_path(path: str) -> CgroupContainer | None:
    """The innermost container named by a cgroup path, or None for a host cgroup.

    >>> parse_cgroup_path("/system.slice/docker-" + "a" * 64 + ".scope").runtime
    'docker'
    """
    found: CgroupContainer | None = None
    pod_uid: str | None = None
    owner_uid: int | None = None
    parent = ""
    for segment in path.split("/"):
        user = _USER_MANAGER.match(segment)
        if user:
            owner_uid = int(user["uid"])
        pod = _POD.match(segment)
        if pod:
            pod_uid = pod["uid"].replace("_", "-")
        scope = _SCOPE.match(segment)
        if scope:
            found = CgroupContainer(scope["id"], _PREFIX_RUNTIME[scope["prefix"]], pod_uid, owner_uid)
        elif _BARE.match(segment):
            if pod_uid is not None:
                runtime = "kubernetes"
            else:
                # containerd's own cgroupfs layout is /<namespace>/<id>
                runtime = _PARENT_RUNTIME.get(parent, "containerd")
            found = CgroupContainer(segment, runtime, pod_uid, owner_uid)
        if segment:
            parent = segment
    return found


def cgroup2_mount() -> str | None:
    """Where the cgroup v2 hierarchy is mounted (pure v2 or the hybrid 'unified'), if anywhere."""
    with open("/proc/self/mounts") as f:
        for line in f:
            _, mountpoint, fstype, *_ = line.split()
            if fstype == "cgroup2":
                return mountpoint
    return None


def v1_mount(controller: str) -> str | None:
    """Where the cgroup v1 hierarchy of `controller` (memory, pids, ...) is mounted, if anywhere."""
    with open("/proc/self/mounts") as f:
        for line in f:
            _, mountpoint, fstype, options, *_ = line.split()
            if fstype == "cgroup" and controller in options.split(","):
                return mountpoint
    return None


def inode(mount: str | None, v2_path: str | None) -> int | None:
    """The cgroup id of a v2 path: the inode of its directory, as bpf_get_current_cgroup_id()."""
    if mount is None or v2_path is None:
        return None
    try:
        return os.stat(mount + v2_path).st_ino
    except OSError:
        return None


@dataclass(frozen=True, slots=True)
class ProcCgroups:
    v2_path: str | None  # the "0::" line
    v1_paths: dict[str, str]  # controllers -> path

    @property
    def display_path(self) -> str:
        """The path to show: the v2 one when there is one, else systemd's, else the first hierarchy's."""
        return self.v2_path or self.v1_paths.get("name=systemd") or next(iter(self.v1_paths.values()), "")


def read_proc_cgroups(pid: int | str, proc_root: str = "/proc") -> ProcCgroups | None:
    try:
        with open(f"{proc_root}/{pid}/cgroup") as f:
            text = f.read()
    except OSError:
        return None
    return parse_proc_cgroup(text)


def parse_proc_cgroup(text: str) -> ProcCgroups:
    """The lines of /proc/<pid>/cgroup, split into the v2 path and the v1 hierarchies."""
    v2: str | None = None
    v1: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, path = parts
        if hierarchy == "0" and controllers == "":
            v2 = path
        else:
            v1[controllers] = path
    return ProcCgroups(v2, v1)


def container_of_proc(cgroups: ProcCgroups) -> tuple[CgroupContainer | None, bool]:
    """The container in a process's cgroups, and whether its v2 path alone identifies it."""
    if cgroups.v2_path:
        ref = parse_cgroup_path(cgroups.v2_path)
        if ref:
            return ref, True
    for path in cgroups.v1_paths.values():
        ref = parse_cgroup_path(path)
        if ref:
            return ref, False
    return None, False


def walk_cgroup2(mount: str, limit: int) -> Iterator[tuple[int, str]]:
    """(inode, path) of the cgroup directories below `mount`, at most `limit` of them."""
    stack = [""]
    seen = 0
    while stack and seen < limit:
        rel = stack.pop()
        try:
            with os.scandir(mount + rel) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        child = f"{rel}/{entry.name}"
                        yield entry.inode(), child
                        stack.append(child)
                        seen += 1
        except OSError:
            continue



def populated(mount: str, path: str) -> bool:
    """Whether a process lives in the cgroup at `path` or below: a container's cgroup left
    behind empty (its runtime killed before it cleaned up) is no running container."""
    for line in (_read(mount, path, "cgroup.events") or "").splitlines():
        key, _, value = line.partition(" ")
        if key == "populated":
            return value == "1"
    return False

# --- the pids controller ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PidsCgroup:
    """A cgroup in the hierarchy the pids controller is on: cgroup v2's, or v1's own."""

    mount: str
    path: str


@dataclass(frozen=True, slots=True)
class PidsReading:
    path: str  # the cgroup whose pids.max applies: the nearest limited one from the cgroup up, itself included
    current: int  # its tasks, threads too (pids.current)
    limit: int | None  # its pids.max; None: no limit up to the root (`path` is then the cgroup itself)
    refused: int  # forks that limit refused (the `max` count of pids.events)


def pids_mounts() -> tuple[str | None, str | None]:
    """(the cgroup v1 pids hierarchy's mount, the cgroup2 mount if the pids controller is on it)."""
    v2 = cgroup2_mount()
    if v2 is not None and "pids" not in (_read(v2, "", "cgroup.controllers") or "").split():
        v2 = None
    return v1_mount("pids"), v2


def pids_cgroup(cgroups: ProcCgroups, v1_pids_mount: str | None, v2_pids_mount: str | None) -> PidsCgroup | None:
    """Where a process's cgroup is in the pids hierarchy (from its /proc/<pid>/cgroup)."""
    if v1_pids_mount is not None:
        path = next((p for c, p in cgroups.v1_paths.items() if "pids" in c.split(",")), None)
        return PidsCgroup(v1_pids_mount, path) if path is not None else None
    if v2_pids_mount is not None and cgroups.v2_path is not None:
        return PidsCgroup(v2_pids_mount, cgroups.v2_path)
    return None


def read_pids(cgroup: PidsCgroup) -> PidsReading | None:
    """The limit that applies to `cgroup` (the nearest pids.max that is not "max", from the
    cgroup up: docker's --pids-limit on the container's cgroup, a TasksMax on a unit or a
    slice above it), how many tasks it holds and how many forks it refused.  None when the
    cgroup is gone, or only the root counts its tasks."""
    path = cgroup.path.rstrip("/")
    if not path or not os.path.isdir(cgroup.mount + path):
        return None
    counted = None  # the nearest cgroup from `path` up that the controller is on (v2 enables it per subtree)
    level = path
    while level:
        text = _read(cgroup.mount, level, "pids.max")
        if text is not None:
            counted = counted or level
            if text.isdigit():
                return _pids_reading(cgroup.mount, level, int(text), path)
        level = level.rsplit("/", 1)[0]
    return _pids_reading(cgroup.mount, counted, None, path) if counted else None


def pids_of_process(pid: int | str, proc_root: str = "/proc") -> PidsReading | None:
    """The pids limit over a process's cgroup (see `read_pids`), or None."""
    cgroups = read_proc_cgroups(pid, proc_root)
    where = pids_cgroup(cgroups, *pids_mounts()) if cgroups is not None else None
    return read_pids(where) if where is not None else None


def _pids_reading(mount: str, limited: str, limit: int | None, leaf: str) -> PidsReading | None:
    current = _read(mount, limited, "pids.current")
    if current is None or not current.isdigit():
        return None
    # cgroup v2 counts a refused fork in the limited cgroup and its ancestors; v1 (and v2
    # mounted with pids_localevents) in the cgroup that forked.
    refused = max(_refused(mount, limited), _refused(mount, leaf))
    return PidsReading(limited, int(current), limit, refused)


def _read(mount: str, path: str, name: str) -> str | None:
    try:
        with open(f"{mount}{path}/{name}") as f:
            return f.read().strip()
    except (OSError, ValueError):
        return None


def _refused(mount: str, path: str) -> int:
    for line in (_read(mount, path, "pids.events") or "").splitlines():
        key, _, value = line.partition(" ")
        if key == "max" and value.isdigit():
            return int(value)
    return 0
