"""Container runtimes, each answering "is this cgroup's container mine, and what is it
called" from the state it keeps on disk (docker, podman, containerd, crio: one module
each).  `find` asks the one the cgroup path points at; the resolver above caches.

The sources are files rather than API sockets: they need no client library, answer
with the runtime's daemon stopped or restarting, and are read as untrusted input
(runtimes/state.py).
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable

from spawnwatch.adapters.cgroups import CgroupContainer
from spawnwatch.adapters.runtimes import containerd, crio, docker, podman
from spawnwatch.adapters.runtimes.state import RuntimeNames

__all__ = ["RuntimeFound", "RuntimeNames", "find", "survey"]


def find(ref: CgroupContainer, host: str = "/", containerd_state: str = containerd.STATE) -> RuntimeNames | None:
    """The names of the container `ref` from its runtime's state, or None when unknown.

    `host`: where the host's root is mounted; `containerd_state`: containerd's --state
    directory on that host.  A pod's cgroupfs path (`/kubepods/<qos>/pod<uid>/<id>`)
    does not say which runtime made it: containerd is asked, then CRI-O.
    """
    if ref.runtime == docker.RUNTIME:
        return docker.names(ref)
    if ref.runtime == podman.RUNTIME:
        return podman.names(ref, host)
    if ref.runtime == crio.RUNTIME:
        return crio.names(ref, host)
    return containerd.names(ref, host, containerd_state) or crio.names(ref, host)


@dataclass(frozen=True, slots=True)
class RuntimeFound:
    """A runtime on this host, for `doctor`: where it shows, and whether its containers are named."""

    runtime: str  # podman, containerd, cri-o; "kubernetes" for pods' containers no runtime's state names
    where: str  # the state directory that shows it is installed, "" when only cgroups show it
    containers: int  # its running containers among those asked about (cgroups name them)
    named: int  # ...of which its state on disk names
    unnamed: tuple[str, ...] = ()  # the first few ids of the others, to look them up by


# Asked about per runtime: each answer reads a file or two of state.
SURVEY_SAMPLE = 32
UNNAMED_SHOWN = 3


def survey(refs: Iterable[CgroupContainer], host: str = "/",
           containerd_state: str = containerd.STATE) -> list[RuntimeFound]:
    """Every runtime but Docker (whose engine `doctor` asks itself) that has state on this
    host or a container in `refs` (the containers the cgroup tree shows), and how many of
    its containers (up to SURVEY_SAMPLE) its state names."""
    marks = {
        podman.RUNTIME: podman.ROOTFUL_STORAGE,
        containerd.RUNTIME: os.path.join(containerd_state, containerd.TASKS),
        crio.RUNTIME: crio.STATE,
    }
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    unnamed: dict[str, list[str]] = defaultdict(list)
    asked: dict[str, int] = defaultdict(int)
    for ref in refs:
        if ref.runtime == docker.RUNTIME or asked[ref.runtime] >= SURVEY_SAMPLE:
            continue
        asked[ref.runtime] += 1
        names = find(ref, host, containerd_state)
        tally = counts[names.runtime if names is not None else ref.runtime]
        tally[0] += 1
        tally[1] += names is not None
        if names is None and len(unnamed[ref.runtime]) < UNNAMED_SHOWN:
            unnamed[ref.runtime].append(ref.id)
    found = []
    for runtime in (podman.RUNTIME, containerd.RUNTIME, crio.RUNTIME, "kubernetes"):
        mark = marks.get(runtime)
        present = mark is not None and os.path.isdir(os.path.join(host, mark.lstrip("/")))
        if present or runtime in counts:
            containers, named = counts.get(runtime, (0, 0))
            found.append(RuntimeFound(runtime, mark if present else "", containers, named, tuple(unnamed.get(runtime, ()))))
    return found
