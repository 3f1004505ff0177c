"""The live process tree with identical siblings collapsed.

Siblings with one signature become one node with a count (`npm exec magic  x20
1.5 GiB`); their children are merged the same way, level by level.  Memory is
the RSS of a node's processes and everything below them.  Nodes whose
processes belong to a group a rule finds suspicious carry the rule names.  A
node in another container than its parent names the container.

Pure: memory and containers come through injected callables.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from spawnwatch.alerts import ResolveContainer, container_place
from spawnwatch.text import human_bytes, printable
from spawnwatch.detect import Finding, GroupKey
from spawnwatch.lineage import Lineage, Process

KERNEL_THREADS_PID = 2  # kthreadd: the kernel's own threads hang below it
MAX_PIDS = 20
MAX_LABEL = 80  # signature characters per text line (the JSON keeps them all)

RssOf = Callable[[int], int]


@dataclass
class TreeNode:
    signature: str
    processes: list[Process]
    rss_bytes: int | None = None  # of these processes and all below them; None when not measured
    rules: tuple[str, ...] = ()
    container: dict[str, Any] | None = None  # set where it differs from the parent's
    children: list[TreeNode] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.processes)

    def to_record(self) -> dict[str, Any]:
        return {
            "signature": self.signature,
            "count": self.count,
            "pids": [p.pid for p in self.processes[:MAX_PIDS]],
            "rss_bytes": self.rss_bytes,
            "rules": list(self.rules),
            "container": self.container,
            "children": [child.to_record() for child in self.children],
        }


def build(
    lineage: Lineage,
    findings: Iterable[Finding] = (),
    orphans: dict[GroupKey, list[Process]] | None = None,
    rss_of: RssOf | None = None,
    resolve_container: ResolveContainer | None = None,
    root_pid: int | None = None,
) -> list[TreeNode]:
    """The collapsed tree of the unreaped processes (below `root_pid` when given)."""
    rules_by_group: dict[GroupKey, set[str]] = defaultdict(set)
    rules_by_process: dict[Process, set[str]] = defaultdict(set)
    for finding in findings:
        rules_by_group[finding.group.key].add(finding.rule)
        for member in finding.group.members:
            rules_by_process[member].add(finding.rule)
    for key, leaked in (orphans or {}).items():
        if "orphaned" in rules_by_group.get(key, ()):
            for proc in leaked:
                rules_by_process[proc].add("orphaned")
    containers: dict[int, dict[str, Any] | None] = {}

    def container_of(proc: Process) -> dict[str, Any] | None:
        if resolve_container is None:
            return None
        if proc.cgroup_id not in containers:
            containers[proc.cgroup_id] = resolve_container(proc.cgroup_id, proc.pid)
        return containers[proc.cgroup_id]

    def node(signature: str, members: list[Process], parent_container: dict[str, Any] | None) -> TreeNode:
        members.sort(key=lambda p: (p.start, p.pid))
        rules: set[str] = set()
        for proc in members:
            rules |= rules_by_process.get(proc, set())
        container = container_of(members[0])
        result = TreeNode(
            signature=signature,
            processes=members,
            rules=tuple(sorted(rules)),
            container=container if container != parent_container else None,
        )
        result.children = collapse([c for p in members for c in p.children if c.reaped_at is None], container)
        if rss_of is not None:
            own = sum(rss_of(p.pid) for p in members if p.alive)
            result.rss_bytes = own + sum(child.rss_bytes or 0 for child in result.children)
        return result

    def collapse(processes: list[Process], parent_container: dict[str, Any] | None) -> list[TreeNode]:
        by_signature: dict[tuple[str, Any], list[Process]] = defaultdict(list)
        for proc in processes:
            by_signature[(proc.signature, proc.cgroup_id)].append(proc)
        nodes = [node(sig, members, parent_container) for (sig, _), members in by_signature.items()]
        return sorted(nodes, key=lambda n: (n.processes[0].start, n.processes[0].pid))

    if root_pid is not None:
        root = lineage.get(root_pid)
        roots = [root] if root is not None else []
    else:
        roots = [
            p for p in lineage.unreaped()
            if p.parent is None and p.pid != KERNEL_THREADS_PID and p.ppid != KERNEL_THREADS_PID
        ]
    return collapse(roots, None)


def render(nodes: list[TreeNode], color: Callable[[str, bool], str] = lambda text, flagged: text) -> list[str]:
    """Text lines: `├─ npm exec magic  x20  1.5 GiB  !! accumulating`."""
    lines: list[str] = []

    def walk(node: TreeNode, prefix: str, last: bool, top: bool) -> None:
        branch = "" if top else ("└─ " if last else "├─ ")
        label = printable(node.signature, MAX_LABEL)
        label += f"  x{node.count}" if node.count > 1 else f"  [pid {node.processes[0].pid}]"
        if node.rss_bytes:
            label += f"  {human_bytes(node.rss_bytes)}"
        if node.container:
            label += f"  ({printable(container_place(node.container), MAX_LABEL)})"
        if node.rules:
            label += "  !! " + ", ".join(node.rules)
        lines.append(prefix + branch + color(label, bool(node.rules)))
        child_prefix = prefix if top else prefix + ("   " if last else "│  ")
        for i, child in enumerate(node.children):
            walk(child, child_prefix, i == len(node.children) - 1, False)

    for root in nodes:
        walk(root, "", True, True)
    return lines
