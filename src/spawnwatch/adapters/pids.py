"""The pids sampler: the pids controller of the cgroups the groups are in, read on a slow
timer and turned into `PidsSample` events when a value changed.

Each poll of the live loop asks it (cheaply: at most every `sample_every_s`) with the
pipeline's cgroups (cgroup id -> a live member's pid).  A cgroup id is resolved to its
place in the pids hierarchy once, through that member's /proc/<pid>/cgroup checked
against the id (the inode of its cgroup2 directory), and cached (bounded).  A limited
cgroup is read every `sample_every_s`, one without a limit every `unlimited_every_s`
(a limit may be set on it later): a few small files each time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

from spawnwatch.adapters.cgroups import (
    PidsCgroup, PidsReading, cgroup2_mount, inode, pids_cgroup, pids_mounts, read_pids, read_proc_cgroups,
)
from spawnwatch.bounded import BoundedMap
from spawnwatch.detect import PidsRule
from spawnwatch.events import PidsSample

NameOf = Callable[[int, "int | None"], "dict[str, Any] | None"]  # the resolver: cgroup id, pid -> container


@dataclass
class _Watched:
    cgroup: PidsCgroup | None  # None: the process is in no pids cgroup (nothing to read)
    pid: int  # the member it was resolved through (names its container)
    due: float = -math.inf
    last: PidsReading | None = None


class PidsSampler:
    def __init__(self, rule: PidsRule, name_of: NameOf | None = None, proc_root: str = "/proc",
                 capacity: int = 4096) -> None:
        self._rule = rule
        self._name_of = name_of
        self._proc = proc_root
        self._v1, self._v2 = pids_mounts() if rule.enabled else (None, None)
        self._cgroup2 = cgroup2_mount()
        self._watched: BoundedMap[int, _Watched] = BoundedMap(capacity)
        self._swept_at = -math.inf
        self._limits: list[dict[str, Any]] = []

    def poll(self, cgroups: Callable[[], dict[int, int]], now: float) -> list[PidsSample]:
        """The samples of the cgroups that changed, if a sweep is due at `now` (seconds since boot)."""
        if (self._v1 is None and self._v2 is None) or now - self._swept_at < self._rule.sample_every_s:
            return []
        self._swept_at = now
        samples = []
        limits = []
        for cgroup_id, pid in cgroups().items():
            watched = self._watch(cgroup_id, pid)
            if watched is None or watched.cgroup is None or now < watched.due:
                continue
            reading = read_pids(watched.cgroup)
            if reading is None:  # the cgroup is gone (or moved): resolved again through a member
                self._watched.pop(cgroup_id, None)  # a capacity of 0 kept nothing to forget
                continue
            limited = reading.limit is not None
            watched.due = now + (self._rule.sample_every_s if limited else self._rule.unlimited_every_s)
            # A cgroup without a limit is news only when it had one.
            if reading != watched.last and (limited or (watched.last is not None and watched.last.limit is not None)):
                samples.append(PidsSample(now, cgroup_id, reading.current, reading.limit, reading.refused,
                                          reading.path))
            watched.last = reading
            if reading.limit is not None:
                container = self._name_of(cgroup_id, watched.pid) if self._name_of is not None else None
                name = container["name"] if container else ""
                # A pod's container is named within its pod only: the pod and namespace say whose.
                pod = {key: (container or {}).get(key) or "" for key in ("namespace", "pod")}
                limits.append({"container": name, **pod, "cgroup": "" if name else reading.path,
                               "current": reading.current, "limit": reading.limit, "refused": reading.refused})
        by_place = {(x["namespace"], x["pod"], x["container"], x["cgroup"]): x for x in limits}
        self._limits = [by_place[place] for place in sorted(by_place)]
        return samples

    @property
    def evicted(self) -> int:
        """The cgroups let go past the capacity, the least recently sampled first."""
        return self._watched.evicted

    def limits(self) -> list[dict[str, Any]]:
        """The limited cgroups of the last sweep, once each, as the metrics show them: by
        container name (and pod, namespace), or by cgroup path on the host."""
        return self._limits

    def _watch(self, cgroup_id: int, pid: int) -> _Watched | None:
        watched = self._watched.get(cgroup_id)
        if watched is not None:
            self._watched.touch(cgroup_id)
            return watched
        cgroups = read_proc_cgroups(pid, self._proc)
        if cgroups is None or (self._cgroup2 is not None and inode(self._cgroup2, cgroups.v2_path) != cgroup_id):
            return None  # the member exited or moved since: another one tells next time
        watched = _Watched(pids_cgroup(cgroups, self._v1, self._v2), pid)
        self._watched.put(cgroup_id, watched)
        return watched
