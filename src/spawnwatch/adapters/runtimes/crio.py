"""CRI-O's containers, named from the OCI spec it keeps for each.

CRI-O stores its containers in containers/storage, like Podman, and writes each one's
OCI spec to `<root>/<driver>-containers/<id>/userdata/config.json`, in the run root
(/run/containers/storage) and the graph root (/var/lib/containers/storage).  The spec's
annotations carry the pod's names (kubelet's `io.kubernetes.pod.*` labels and CRI-O's
own `io.kubernetes.cri-o.*`), so no socket is asked.  CRI-O is not packaged for
Debian 12: this reader is tested on recorded state (tests/fixtures/runtimes/crio/).
"""

from __future__ import annotations

import os

from spawnwatch.adapters.cgroups import CgroupContainer
from spawnwatch.adapters.runtimes.state import PodAnnotations, RuntimeNames, field, read_json

RUNTIME = "cri-o"
STATE = "/run/crio"  # CRI-O's own run directory (its socket): present where it is installed
ROOTS = ("/run/containers/storage", "/var/lib/containers/storage")
DRIVERS = ("overlay", "vfs", "btrfs", "zfs")
SPEC_LIMIT = 1 << 20  # Kubernetes caps a pod's annotations at 256 KiB in all

# kubelet's labels (pkg/kubelet/types/labels.go), copied into the spec by CRI-O,
# and CRI-O's own (pkg/annotations).
ANNOTATIONS = PodAnnotations(
    container_name="io.kubernetes.container.name", image_name="io.kubernetes.cri-o.ImageName",
    pod_name="io.kubernetes.pod.name", pod_namespace="io.kubernetes.pod.namespace",
    pod_uid="io.kubernetes.pod.uid", container_type="io.kubernetes.cri-o.ContainerType",
)
CONTAINER_MANAGER = "io.container.manager"  # "libpod": Podman's, which shares the storage


def names(ref: CgroupContainer, host: str = "/", roots: tuple[str, ...] = ROOTS) -> RuntimeNames | None:
    """What CRI-O's spec says of the container `ref` names, or None if it is not CRI-O's.

    `host`: where the host's root is mounted.  A cgroup under a user's systemd manager
    is never named from here.
    """
    if ref.runtime not in (RUNTIME, "kubernetes") or ref.owner_uid is not None:
        return None
    for root in roots:
        top = os.path.join(host, root.lstrip("/"))
        for driver in DRIVERS:
            spec = read_json(top, f"{driver}-containers/{ref.id}/userdata/config.json", SPEC_LIMIT)
            annotations = spec.get("annotations") if isinstance(spec, dict) else None
            if isinstance(annotations, dict) and _is_crio(annotations):
                return ANNOTATIONS.names(RUNTIME, ref, annotations)
    return None


def _is_crio(annotations: dict) -> bool:
    return (annotations.get(CONTAINER_MANAGER) != "libpod"
            and field(annotations.get(ANNOTATIONS.container_type)) is not None)
