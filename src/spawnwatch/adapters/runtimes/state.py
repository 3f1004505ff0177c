"""Reading what a container runtime keeps on disk, as if a hostile user had written it.

A runtime's state lives below a directory its daemon owns (`/run/containerd`,
`/var/lib/containers/storage`, a user's `~/.local/share/containers/storage`).  The
directory the administrator configured is opened as given; every component below it is
opened with O_NOFOLLOW, so no link planted there is followed, and must be a directory
up to the last, which must be a regular file (never a FIFO that would block the read)
no bigger than the caller's limit.  With `owners`, every component must belong to one
of those uids, so a user cannot pass off a file of someone else's as their own.  Any
failure reads as None: the caller says "unknown", never raises.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from typing import Any

from spawnwatch.adapters.cgroups import CgroupContainer

# One name, image or Kubernetes name: Kubernetes caps names at 253 bytes and an image
# reference is rarely longer; a longer value is cut rather than carried whole.
FIELD_LIMIT = 512


@dataclass(frozen=True, slots=True)
class RuntimeNames:
    """What a runtime's own state calls a container; None where it says nothing.

    For a pod's container (containerd's CRI plugin, CRI-O) `name` is the Kubernetes
    container name, and `pod`, `namespace` and `pod_uid` say whose it is; `sandbox` marks
    the pod's own pause container.
    """

    runtime: str  # docker, podman, containerd, cri-o
    id: str
    name: str | None = None
    image: str | None = None
    pod: str | None = None
    namespace: str | None = None  # the Kubernetes namespace
    pod_uid: str | None = None
    sandbox: bool = False
    runtime_namespace: str | None = None  # containerd's own namespace: k8s.io, moby, default, ...


@dataclass(frozen=True, slots=True)
class PodAnnotations:
    """The keys under which a runtime writes a pod container's names into its OCI spec's
    annotations (containerd's CRI plugin and CRI-O each have their own)."""

    container_name: str
    image_name: str
    pod_name: str
    pod_namespace: str
    pod_uid: str
    container_type: str  # "sandbox" for the pod's own pause container

    def names(self, runtime: str, ref: CgroupContainer, annotations: dict, **more: Any) -> RuntimeNames:
        """The pod container `ref` as `annotations` name it (`more`: what the runtime adds)."""
        return RuntimeNames(
            runtime,
            ref.id,
            name=field(annotations.get(self.container_name)),
            image=field(annotations.get(self.image_name)),
            pod=field(annotations.get(self.pod_name)),
            namespace=field(annotations.get(self.pod_namespace)),
            pod_uid=field(annotations.get(self.pod_uid)) or ref.pod_uid,
            sandbox=annotations.get(self.container_type) == "sandbox",
            **more,
        )


def field(value: Any) -> str | None:
    """A string read from state, cut to FIELD_LIMIT; anything else (or empty) is None."""
    if not isinstance(value, str) or not value:
        return None
    return value[:FIELD_LIMIT]


def read_json(top: str, relative: str, limit: int, owners: frozenset[int] | None = None) -> Any:
    """The JSON document at `top`/`relative` (relative: '/'-separated, no '..'), or None."""
    data = read_file(top, relative, limit, owners)
    if data is None:
        return None
    try:
        return json.loads(data)
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than the parser's stack
        return None


def read_file(top: str, relative: str, limit: int, owners: frozenset[int] | None = None) -> bytes | None:
    parts = [part for part in relative.split("/") if part]
    if not parts or any(part in (".", "..") for part in parts):
        return None
    try:
        directory = os.open(top, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not _owned(directory, owners):
            return None
        for part in parts[:-1]:
            below = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=directory)
            os.close(directory)
            directory = below
            if not _owned(directory, owners):
                return None
        fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=directory)
    except OSError:
        return None
    finally:
        os.close(directory)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > limit or not _owned(fd, owners):
            return None
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(limit + 1)
        return data if len(data) <= limit else None
    except OSError:
        return None
    finally:
        os.close(fd)


def list_dirs(top: str, relative: str, limit: int) -> list[str]:
    """Up to `limit` names of the directories in `top`/`relative` (links not followed)."""
    parts = [part for part in relative.split("/") if part]
    if any(part in (".", "..") for part in parts):
        return []
    try:
        directory = os.open(top, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return []
    try:
        for part in parts:
            below = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=directory)
            os.close(directory)
            directory = below
        names: list[str] = []
        with os.scandir(directory) as entries:
            for entry in entries:
                if len(names) >= limit:
                    break
                if entry.is_dir(follow_symlinks=False):
                    names.append(entry.name)
        return names
    except OSError:
        return []
    finally:
        os.close(directory)


def _owned(fd: int, owners: frozenset[int] | None) -> bool:
    return owners is None or os.fstat(fd).st_uid in owners
