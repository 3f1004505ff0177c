"""Event filters for `trace`: pure, fed from the event stream itself."""

from __future__ import annotations

from typing import Iterable

from spawnwatch.events import Brief, Event, Fork, Reap, Tally

MAX_TRACKED_DESCENDANTS = 65536


class SubtreeFilter:
    """Passes events of one process and all its descendants, following forks as
    they happen.  Descendants that already existed are given at construction."""

    def __init__(self, root: int, existing_descendants: Iterable[int] = ()) -> None:
        self.root = root
        self._members = {root, *existing_descendants}

    def __call__(self, event: Event) -> bool:
        if isinstance(event, Fork) and event.ppid in self._members:
            if len(self._members) < MAX_TRACKED_DESCENDANTS:
                self._members.add(event.pid)
        member = event.pid in self._members or (isinstance(event, (Brief, Tally)) and event.ppid in self._members)
        if isinstance(event, Reap) and event.pid != self.root:
            self._members.discard(event.pid)
        return member


class CommFilter:
    """Passes events whose comm is `name` (a process's comm changes at exec)."""

    def __init__(self, name: str) -> None:
        self.name = name[:15]  # the kernel keeps 15 characters of comm

    def __call__(self, event: Event) -> bool:
        return event.comm == self.name


def container_matches(container: dict | None, wanted: str) -> bool:
    """`container` (the alert contract's object, None on the host) is the one a user
    named: by name (a leading / allowed), by a prefix of its id, or for a pod's
    container by its pod (`POD` or `NAMESPACE/POD`: every container of the pod)."""
    if container is None or not wanted:
        return False
    pod = container.get("pod")
    if pod and wanted in (pod, f"{container.get('namespace')}/{pod}"):
        return True
    return container.get("name") == wanted.lstrip("/") or str(container.get("id", "")).startswith(wanted)
