"""The collapsed tree: built from synthetic lineages, and `spawnwatch tree` on real processes."""

from __future__ import annotations

import json
import subprocess
import sys

from click.testing import CliRunner

from spawnwatch import tree
from spawnwatch.cli import main
from spawnwatch.config import load
from spawnwatch.pipeline import Pipeline
from streams import SUPERVISOR, host, info, snapshot

MIB = 1 << 20


def leaky_host(children: int = 20, cgroup_id: int = 1):
    processes = []
    for i in range(children):
        npm, sh, node = 1000 + 3 * i, 1001 + 3 * i, 1002 + 3 * i
        start = 10.0 + i * 30
        processes += [
            info(npm, SUPERVISOR.pid, start, "npm exec magic", cgroup_id=cgroup_id),
            info(sh, npm, start + 1, "sh", "-c", "magic", cgroup_id=cgroup_id),
            info(node, sh, start + 1, "node", "/root/.npm/_npx/ab12cd34ef56/node_modules/.bin/magic", cgroup_id=cgroup_id),
        ]
    return host(900.0, *processes)


def built(snap, **kwargs):
    pipeline = Pipeline(load())
    pipeline.feed(snap)
    findings = pipeline.detector.evaluate(snap.ts)
    return tree.build(pipeline.lineage, findings, pipeline.detector.charged_orphans(), **kwargs)


def find(nodes, signature):
    for node in nodes:
        if node.signature == signature:
            return node
        found = find(node.children, signature)
        if found:
            return found
    return None


def test_identical_siblings_collapse_level_by_level_with_memory_and_flags():
    nodes = built(leaky_host(), rss_of=lambda pid: MIB)
    supervisor = find(nodes, "python supervisor.py")
    [npm] = supervisor.children
    assert (npm.signature, npm.count, npm.rules, npm.rss_bytes) == ("npm exec magic", 20, ("accumulating",), 60 * MIB)
    [sh] = npm.children
    [node] = sh.children
    assert (sh.signature, sh.count, sh.rules) == ("sh -c magic", 20, ())
    assert (node.signature, node.count, node.rss_bytes) == ("node magic", 20, 20 * MIB)
    assert supervisor.rss_bytes == 61 * MIB
    lines = tree.render(nodes)
    assert any(line.endswith("npm exec magic  x20  60.0 MiB  !! accumulating") for line in lines)
    assert any("python supervisor.py  [pid 200]" in line for line in lines)


def test_the_tree_draws_branches():
    lines = tree.render(built(leaky_host(2)))
    assert lines[0].startswith("init")
    assert lines[1] == "└─ bash  [pid 100]"
    assert lines[2] == "   └─ python supervisor.py  [pid 200]"
    assert lines[3].startswith("      └─ npm exec magic  x2")


def test_rooted_at_a_pid_and_kernel_threads_left_out():
    kernel = [info(2, 0, 0.0), info(3, 2, 0.0), info(4, 2, 0.0)]
    nodes = built(snapshot(900.0, *host().processes, *kernel))
    assert [n.processes[0].pid for n in nodes] == [1]
    [root] = built(leaky_host(3), root_pid=200)
    assert root.signature == "python supervisor.py" and root.children[0].count == 3


def test_a_container_is_named_where_it_begins():
    snap = host(100.0, info(300, 200, 10.0, "containerd-shim", cgroup_id=1),
                info(301, 300, 11.0, "node", "server.js", cgroup_id=9),
                info(302, 301, 12.0, "npm exec magic", cgroup_id=9))
    metamcp = {"id": "0123456789ab", "name": "metamcp", "image": "metamcp:1"}
    nodes = built(snap, resolve_container=lambda cgroup_id, pid: metamcp if cgroup_id == 9 else None)
    server = find(nodes, "node server.js")
    assert server.container == metamcp and server.children[0].container is None
    assert any(line.endswith("node server.js  [pid 301]  (container metamcp)") for line in tree.render(nodes))


def test_the_record_is_nested_nodes():
    record = find(built(leaky_host(25)), "npm exec magic").to_record()
    assert set(record) == {"signature", "count", "pids", "rss_bytes", "rules", "container", "children"}
    assert record["count"] == 25 and len(record["pids"]) == 20 and record["children"][0]["signature"] == "sh -c magic"


# Ten identical children started in five bursts over 4.4 s; on SIGTERM it ends and reaps them.
HELPER = """
import signal, subprocess, sys, time
children = []
def stop(*_):
    for child in children:
        child.kill()
        child.wait()
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
for burst in range(5):
    children += [subprocess.Popen(["sleep", "120"]) for _ in range(2)]
    time.sleep(1.1)
print("ready", flush=True)
time.sleep(120)
"""


def test_spawnwatch_tree_on_real_processes_flags_accumulated_children():
    helper = subprocess.Popen([sys.executable, "-c", HELPER], stdout=subprocess.PIPE, text=True,
                              start_new_session=True)
    try:
        assert helper.stdout.readline().strip() == "ready"
        result = CliRunner().invoke(main, ["tree", "--json", "--pid", str(helper.pid)])
        assert result.exit_code == 0, result.output
        [root] = json.loads(result.stdout)["roots"]
        assert root["pids"] == [helper.pid]
        [sleeps] = root["children"]
        assert sleeps["signature"] == "sleep <n>" and sleeps["count"] == 10
        assert sleeps["rules"] == ["accumulating"] and sleeps["rss_bytes"] > 0
        human = CliRunner().invoke(main, ["tree", "--pid", str(helper.pid)])
        assert "sleep <n>  x10" in human.output and "!! accumulating" in human.output
    finally:
        helper.terminate()
        helper.wait(timeout=30)
