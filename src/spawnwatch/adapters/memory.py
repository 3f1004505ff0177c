"""Memory of the host and of a process's cgroup, for `spawnwatch report`."""

from __future__ import annotations

from dataclasses import dataclass

import psutil

from spawnwatch.adapters.cgroups import cgroup2_mount, read_proc_cgroups, v1_mount

# cgroup v1 says "no limit" with a huge page-aligned number (v2 says "max")
_UNLIMITED = 1 << 62


@dataclass(frozen=True, slots=True)
class HostMemory:
    total: int
    used: int  # neither free nor page cache: what processes and the kernel hold
    free: int
    cache: int  # page cache and buffers, given back under pressure


def host_memory() -> HostMemory:
    vm = psutil.virtual_memory()
    return HostMemory(total=vm.total, used=vm.used, free=vm.free, cache=vm.buffers + vm.cached)


@dataclass(frozen=True, slots=True)
class CgroupMemory:
    used: int  # as `docker stats` counts it: usage without the inactive page cache
    limit: int | None  # None: unlimited


def cgroup_memory(pid: int) -> CgroupMemory | None:
    """Memory of the cgroup `pid` is in (its memory controller's), None when unreadable."""
    cgroups = read_proc_cgroups(pid)
    if cgroups is None:
        return None
    memory_v1 = next((p for c, p in cgroups.v1_paths.items() if "memory" in c.split(",")), None)
    memory_mount = v1_mount("memory") if memory_v1 is not None else None
    if memory_v1 is not None and memory_mount is not None:
        base = memory_mount + memory_v1
        usage = _read_int(f"{base}/memory.usage_in_bytes")
        limit = _read_int(f"{base}/memory.limit_in_bytes")
        inactive = _read_stat(f"{base}/memory.stat", "total_inactive_file")
    else:
        mount = cgroup2_mount()
        if mount is None or cgroups.v2_path is None:
            return None
        base = mount + cgroups.v2_path
        usage = _read_int(f"{base}/memory.current")
        limit = _read_int(f"{base}/memory.max")  # "max" reads as None
        inactive = _read_stat(f"{base}/memory.stat", "inactive_file")
    if usage is None:
        return None
    if limit is not None and limit >= _UNLIMITED:
        limit = None
    return CgroupMemory(used=max(usage - (inactive or 0), 0), limit=limit)


def _read_int(path: str) -> int | None:
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def _read_stat(path: str, key: str) -> int | None:
    try:
        with open(path) as f:
            for line in f:
                name, _, value = line.partition(" ")
                if name == key:
                    return int(value)
    except (OSError, ValueError):
        pass
    return None
