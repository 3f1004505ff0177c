"""Alerts: findings turned into a lifecycle of records.

An alert is keyed by (rule, group).  It is sent `firing` once when its rule
first holds, re-sent `firing` with fresh counts at most every `update_every_s`
(and only when the counts changed), and sent `resolved` once the rule has not
held for `resolve_after_s`.

A rise of severity ("warning" at the rule's threshold, "critical" past its
`critical_*` count) is re-sent at once; it does not fall back while the alert fires.

`Alert.to_record()` is the contract of `watch --json`:
    {"kind": "alert", "state": "firing" | "resolved", "rule", "severity": "warning" | "critical", "signature",
     "spawner": {"pid", "ppid", "argv", "comm"},
     "container": null | {"id", "name", "image", "runtime", and for a pod's: "pod", "namespace", "pod_uid"},
     "live", "spawned", "exited", "zombies", "orphans", "rss_bytes", "pids": [<= 20], "message",
     "containers": [{"id", "name", "image", "runtime": "docker" | "podman", "memory_bytes": int | null, "ambiguous": bool}],
     "pids_limit": null | {"cgroup", "current", "limit", "refused_forks"}}

`containers` lists the leaked containers of `orphaned_containers` (empty for the other
rules); for that rule `orphans` counts them and `rss_bytes` sums their memory, and
`spawner` is the host process whose clients left them running.  `pids_limit` is the
limit a group of the pids rule fills (null for the other rules).

Containers come from an injected resolver, `resolve_container(cgroup_id, pid)`
-> the `container` object above, or None.  A pod's container is named by its
Kubernetes container name; its pod and namespace say whose it is.  Recordings made
before runtimes carry no "runtime": it is read as Docker's, the only one then named.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable

from spawnwatch.detect import CRITICAL, WARNING, Finding, Group, GroupKey
from spawnwatch.events import PidsSample
from spawnwatch.records import ALERT
from spawnwatch.text import human_bytes

ResolveContainer = Callable[[int, "int | None"], "dict[str, Any] | None"]

FIRING = "firing"
RESOLVED = "resolved"


@dataclass(frozen=True, slots=True)
class AlertPolicy:
    update_every_s: float = 30.0
    resolve_after_s: float = 5.0
    max_pids: int = 20


@dataclass(frozen=True, slots=True)
class Alert:
    state: str
    rule: str
    signature: str
    spawner: dict[str, Any]
    container: dict[str, Any] | None
    live: int
    spawned: int
    exited: int
    zombies: int
    orphans: int
    rss_bytes: int
    pids: tuple[int, ...]
    message: str
    uss_bytes: int | None = None  # in the message only: not every host lets us read it
    ts: float = 0.0  # when it was raised (seconds since boot); not part of the record
    severity: str = WARNING
    pids_limit: PidsSample | None = None
    containers: tuple[dict[str, Any], ...] = ()

    def counts(self) -> tuple[int, ...]:
        limit = (self.pids_limit.current, self.pids_limit.refused) if self.pids_limit else ()
        return (self.live, self.spawned, self.exited, self.zombies, self.orphans, *limit)

    def to_record(self) -> dict[str, Any]:
        record = {
            "kind": ALERT,
            "state": self.state,
            "rule": self.rule,
            "severity": self.severity,
            "signature": self.signature,
            "spawner": dict(self.spawner),
            "container": dict(self.container) if self.container is not None else None,
            "live": self.live,
            "spawned": self.spawned,
            "exited": self.exited,
            "zombies": self.zombies,
            "orphans": self.orphans,
            "rss_bytes": self.rss_bytes,
            "pids": list(self.pids),
            "message": self.message,
            "containers": [dict(c) for c in self.containers],
            "pids_limit": None,
        }
        if self.pids_limit is not None:
            limit = self.pids_limit
            record["pids_limit"] = {"cgroup": limit.path, "current": limit.current, "limit": limit.limit,
                                    "refused_forks": limit.refused}
        return record


@dataclass
class _Active:
    sent: Alert  # the last record sent
    latest: Alert  # as of the last evaluation that held
    group: Group
    held_at: float


class AlertBook:
    def __init__(self, policy: AlertPolicy = AlertPolicy(), resolve_container: ResolveContainer | None = None) -> None:
        self.policy = policy
        self._resolve_container = resolve_container or (lambda cgroup_id, pid: None)
        self.active: dict[tuple[str, GroupKey], _Active] = {}
        self._containers: dict[int, dict[str, Any] | None] = {}  # per cgroup, for the alerts of one update

    def update(self, findings: list[Finding], now: float) -> list[Alert]:
        """The records to send after an evaluation that produced `findings`."""
        out = []
        holding = set()
        self._containers.clear()
        for finding in findings:
            key = (finding.rule, finding.group.key)
            holding.add(key)
            active = self.active.get(key)
            # Severity never falls while the alert fires: a count hovering at the critical
            # mark would otherwise re-send the alert at every crossing.
            raised = CRITICAL if active is not None and active.sent.severity == CRITICAL else finding.severity
            alert = self._from_finding(finding, raised, now)
            if active is None:
                self.active[key] = _Active(sent=alert, latest=alert, group=finding.group, held_at=now)
                out.append(alert)
                continue
            active.latest, active.held_at = alert, now
            due = alert.counts() != active.sent.counts() and now - active.sent.ts >= self.policy.update_every_s
            # At once, too, when the container is named at last (an engine that was slow or down).
            if due or alert.severity != active.sent.severity or alert.container != active.sent.container:
                active.sent = alert
                out.append(alert)
        for key, active in list(self.active.items()):
            if key not in holding and now - active.held_at >= self.policy.resolve_after_s:
                del self.active[key]
                out.append(self._resolved(active, now))
        return out

    def _container(self, group: Group) -> dict[str, Any] | None:
        cgroup_id = group.key.cgroup_id
        if cgroup_id not in self._containers:
            self._containers[cgroup_id] = self._resolve_container(cgroup_id, group.spawner.pid)
        return self._containers[cgroup_id]

    def _from_finding(self, finding: Finding, severity: str, now: float) -> Alert:
        group = finding.group
        alert = self._base(group, finding.rule, FIRING, now)
        memory = f"; {human_bytes(finding.rss_bytes)} RSS" if finding.rss_bytes else ""
        if finding.uss_bytes:
            memory += f" ({human_bytes(finding.uss_bytes)} USS)"
        return replace(
            alert,
            severity=severity,
            orphans=finding.orphans,
            rss_bytes=finding.rss_bytes,
            uss_bytes=finding.uss_bytes,
            pids=finding.pids[: self.policy.max_pids],
            pids_limit=finding.pids_limit,
            containers=finding.containers,
            message=f"{severity}: {describe(group, finding.rule, where(alert.container, finding.pids_limit))}: "
                    f"{finding.detail}{memory}",
        )

    def _resolved(self, active: _Active, now: float) -> Alert:
        group, rule = active.group, active.sent.rule
        alert = self._base(group, rule, RESOLVED, now)
        limit = active.sent.pids_limit
        return replace(
            alert,
            severity=active.sent.severity,
            pids_limit=limit,
            message=f"resolved: {describe(group, rule, where(alert.container, limit))}: "
                    f"now {group.live} live, {group.zombies} zombies",
        )

    def _base(self, group: Group, rule: str, state: str, now: float) -> Alert:
        spawner = group.spawner
        return Alert(
            state=state,
            rule=rule,
            signature=group.key.signature,
            spawner={"pid": spawner.pid, "ppid": spawner.ppid, "argv": list(spawner.argv), "comm": spawner.comm},
            container=self._container(group),
            live=group.live,
            spawned=group.spawned,
            exited=group.exited,
            zombies=group.zombies,
            orphans=0,
            rss_bytes=0,
            pids=(),
            message="",
            ts=now,
        )


_VERBS = {
    "accumulating": "keeps spawning",
    "orphaned": "leaks the descendants of",
    "zombie": "does not reap",
    "spawn_rate": "spawns too fast",
    "oom": "lost to the OOM killer one of",
    "pids": "fills the pids limit of {where} with",
    "orphaned_containers": "leaves running the containers of",
}


def describe(group: Group, rule: str, place: str = "its cgroup") -> str:
    spawner = group.spawner
    return f"{spawner.comm} (pid {spawner.pid}) {_VERBS[rule].format(where=place)} `{group.key.signature}`"


def where(container: dict[str, Any] | None, limit: PidsSample | None) -> str:
    """The container (or, on the host, the cgroup: a systemd unit or slice) a pids limit is on."""
    if container is not None:
        return container_place(container)
    return f"cgroup {limit.path}" if limit is not None and limit.path else "its cgroup"


def container_place(container: dict[str, Any]) -> str:
    """`container NAME`, or for a pod's container `container NAME of pod NAMESPACE/POD`."""
    if container.get("pod"):
        return f"container {container['name']} of pod {container.get('namespace') or '?'}/{container['pod']}"
    return f"container {container['name']}"
