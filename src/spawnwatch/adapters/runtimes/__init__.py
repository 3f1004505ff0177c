"""Container runtimes, each answering "is this cgroup's container mine, and what is it
called" from the state it keeps on disk (docker, podman, containerd, crio: one module
each).  `find` asks the one the cgroup path points at; the resolver above caches.

The sources are files rather than API sockets: they need no client library, answer
with the runtime's daemon stopped or restarting, and are read as untrusted input
(runtimes/state.py).
"""

from __future__ import annotations

from spawnwatch.adapters.cgroups import CgroupContainer
from spawnwatch.adapters.runtimes import containerd, crio, docker, podman
from spawnwatch.adapters.runtimes.state import RuntimeNames

__all__ = ["RuntimeNames", "find"]


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
