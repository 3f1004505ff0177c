"""containerd's containers, in any namespace, named from the OCI spec of their running task.

containerd's v2 shim keeps each running task's bundle in
`<state>/io.containerd.runtime.v2.task/<namespace>/<id>/`, its `config.json` the OCI
spec the container runs with (state is /run/containerd by default).  For a pod's
container the CRI plugin (namespace `k8s.io`) writes the pod's names into that spec's
annotations, so the spec alone names pod, namespace, container and image: no socket, no
gRPC client, and it still answers while containerd restarts.  Names containerd keeps
elsewhere (its labels, a nerdctl name) live in its bolt database and are not read: a
container outside Kubernetes gets its id and containerd namespace only.
"""

from __future__ import annotations

import os

from spawnwatch.adapters.cgroups import CgroupContainer
from spawnwatch.adapters.runtimes.state import PodAnnotations, RuntimeNames, field, list_dirs, read_json

RUNTIME = "containerd"
STATE = "/run/containerd"
TASKS = "io.containerd.runtime.v2.task"
# An OCI spec is a few KiB; Kubernetes caps a pod's annotations at 256 KiB in all.
SPEC_LIMIT = 1 << 20
NAMESPACES_LIMIT = 64

# The CRI plugin's annotations (containerd pkg/cri/annotations; sandbox-uid since 1.6.11).
ANNOTATIONS = PodAnnotations(
    container_name="io.kubernetes.cri.container-name", image_name="io.kubernetes.cri.image-name",
    pod_name="io.kubernetes.cri.sandbox-name", pod_namespace="io.kubernetes.cri.sandbox-namespace",
    pod_uid="io.kubernetes.cri.sandbox-uid", container_type="io.kubernetes.cri.container-type",
)


def names(ref: CgroupContainer, host: str = "/", state: str = STATE) -> RuntimeNames | None:
    """What containerd's task state says of the container `ref` names, or None.

    `host`: where the host's root is mounted; `state`: containerd's --state directory.
    A cgroup under a user's systemd manager is that user's to name and is never looked
    up here (rootless containerd is not supported).
    """
    if ref.runtime not in (RUNTIME, "kubernetes") or ref.owner_uid is not None:
        return None
    tasks = os.path.join(host, state.lstrip("/"), TASKS)
    for namespace in list_dirs(tasks, "", NAMESPACES_LIMIT):
        spec = read_json(tasks, f"{namespace}/{ref.id}/config.json", SPEC_LIMIT)
        if spec is not None:
            return _named(ref, namespace, spec)
    return None


def _named(ref: CgroupContainer, namespace: str, spec: object) -> RuntimeNames:
    annotations = spec.get("annotations") if isinstance(spec, dict) else None
    if not isinstance(annotations, dict) or field(annotations.get(ANNOTATIONS.pod_name)) is None:
        # Not the CRI's: all containerd says is which namespace it runs in.
        return RuntimeNames(RUNTIME, ref.id, pod_uid=ref.pod_uid, runtime_namespace=field(namespace))
    return ANNOTATIONS.names(RUNTIME, ref, annotations, runtime_namespace=field(namespace))
