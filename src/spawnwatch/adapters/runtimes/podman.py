"""Podman's containers, named from containers/storage's own record of them.

Podman keeps each container in containers/storage: `<graph root>/<driver>-containers/
containers.json` lists them, each with its names and a `metadata` string (JSON itself)
that holds `image-name`.  That file is read, not Podman's API: it needs no daemon
(Podman has none unless `podman system service` runs) and no client library.  The OCI
spec beside it (`<id>/userdata/config.json`) was checked too: Podman 4.3 writes neither
name nor image there.  A Podman pod's name lives only in libpod's bolt database, which
is not read: a container in a pod is named, its pod is not.

Rootful containers live in /var/lib/containers/storage.  A rootless one is in its
user's `~/.local/share/containers/storage` (the default; an XDG_DATA_HOME or
storage.conf of the user's own is not followed), found only when its cgroup is under
that user's systemd manager (`user@<uid>.service/.../libpod-<id>.scope`), and read only
from files that user (or root) owns.
"""

from __future__ import annotations

import json
import os

from spawnwatch.adapters.cgroups import CgroupContainer
from spawnwatch.adapters.runtimes.state import RuntimeNames, field, read_file, read_json

RUNTIME = "podman"
ROOTFUL_STORAGE = "/var/lib/containers/storage"
ROOTLESS_STORAGE = ".local/share/containers/storage"  # below the user's home
DRIVERS = ("overlay", "vfs", "btrfs", "zfs")
# A record is ~500 bytes: 16 MiB is some 30,000 containers.
CONTAINERS_LIMIT = 16 << 20
METADATA_LIMIT = 64 << 10
PASSWD_LIMIT = 4 << 20


def names(ref: CgroupContainer, host: str = "/") -> RuntimeNames | None:
    """Podman's name and image for the container `ref` names, or None if Podman has none.

    `host`: where the host's root is mounted (a container of spawnwatch sees it elsewhere).
    """
    if ref.runtime != RUNTIME:
        return None
    if ref.owner_uid is None:
        top, storage, owners = os.path.join(host, ROOTFUL_STORAGE.lstrip("/")), "", None
    else:
        # The user owns everything below their home: from there on no link is followed.
        home = _home(host, ref.owner_uid)
        if home is None:
            return None
        top, storage = os.path.join(host, home.lstrip("/")), ROOTLESS_STORAGE
        owners = frozenset({0, ref.owner_uid})
    for driver in DRIVERS:
        listed = read_json(top, f"{storage}/{driver}-containers/containers.json", CONTAINERS_LIMIT, owners)
        if isinstance(listed, list):
            record = next((c for c in listed if isinstance(c, dict) and c.get("id") == ref.id), None)
            if record is not None:
                return _named(ref.id, record)
    return None


def _named(container_id: str, record: dict) -> RuntimeNames:
    listed_names = record.get("names")
    name = field(listed_names[0]) if isinstance(listed_names, list) and listed_names else None
    metadata = record.get("metadata")
    image = None
    if isinstance(metadata, str) and len(metadata) <= METADATA_LIMIT:
        try:
            described = json.loads(metadata)
        except (ValueError, RecursionError):
            described = None
        if isinstance(described, dict):
            image = field(described.get("image-name"))
            name = name or field(described.get("name"))
    return RuntimeNames(RUNTIME, container_id, name=name, image=image or field(record.get("image")))


def _home(host: str, uid: int) -> str | None:
    """The home directory /etc/passwd gives `uid` (users of NSS modules alone are not found)."""
    data = read_file(host, "etc/passwd", PASSWD_LIMIT)
    if data is None:
        return None
    wanted = str(uid)
    for line in data.decode("utf-8", "replace").splitlines():
        fields = line.split(":")
        if len(fields) >= 7 and fields[2] == wanted and fields[5].startswith("/"):
            return fields[5]
    return None
