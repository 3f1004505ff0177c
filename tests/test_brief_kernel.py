"""Held forks on the real kernel: a process forked, exited and reaped with nothing
in between comes as one Brief; anything else arrives as before, the forks held
too long announced by the probe's sweep.  Each test looks at its own processes
only, so other activity on the host never matters."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from typing import Callable

import pytest

from children import FORK_THEN
from spawnwatch.adapters import procfs
from spawnwatch.events import Brief, Event, ExecBrief, ExecTally, Tally
from spawnwatch.probe import Probe

pytestmark = pytest.mark.root

BRIEF_CHILDREN = 30

# Makes every shape of process the kernel side tells apart, prints their pids as
# one JSON line, and waits for a line on stdin before it exits (its zombie then
# goes to init).
FAMILY = FORK_THEN + f"""
import json, os, sys, time

brief = [fork(lambda: None) for _ in range({BRIEF_CHILDREN})]
for pid in brief:
    os.waitpid(pid, 0)
sleeper = fork(lambda: time.sleep(2))
zombie = fork(lambda: None)
execer = fork(lambda: os.execv("/bin/true", ["true"]))
os.waitpid(execer, 0)
exec_sleeper = fork(lambda: os.execv("/bin/sleep", ["sleep", "2"]))
twice = fork(lambda: os.execv("/bin/sh", ["sh", "-c", "exec /bin/true twice"]))
os.waitpid(twice, 0)
exec_forker = fork(lambda: os.execv("/bin/sh", ["sh", "-c", "/bin/true forked; exit 0"]))
os.waitpid(exec_forker, 0)
r, w = os.pipe()
forker = fork(lambda: (os.write(w, str(fork(lambda: None)).encode()), os.wait()))
os.waitpid(forker, 0)
grandchild = int(os.read(r, 32))
print(json.dumps(dict(brief=brief, sleeper=sleeper, zombie=zombie, execer=execer, forker=forker,
                      grandchild=grandchild, exec_sleeper=exec_sleeper, twice=twice, exec_forker=exec_forker)),
      flush=True)
os.waitpid(sleeper, 0)
os.waitpid(exec_sleeper, 0)
print("reaped", flush=True)
sys.stdin.readline()
"""

# Forks 40 children that exit at once, a few sleepers among them, and reaps each
# as it exits once every one is forked: zombies and sleepers share the few birth slots.
CROWD = """
import json, os, sys, time
children = []
for i in range(40):
    pid = os.fork()
    if pid == 0:
        if i % 10 == 0:
            time.sleep(1)
        os._exit(0)
    children.append(pid)
for _ in children:
    os.wait()
print(json.dumps(children), flush=True)
"""


def watch_probe(birth_slots: int | None = None, compact_lives: bool = False) -> Probe:
    """A probe as `watch` opens it: a reap whose run of sched_process_free the kernel
    skipped (about one in a thousand) is settled from /proc, or it would never come."""
    return Probe(parent_of=procfs.parent_pid, zombie_start=procfs.zombie_start, birth_slots=birth_slots,
                 compact_lives=compact_lives)


class Stream:
    """A probe's events, kept per pid, polled until a condition holds."""

    def __init__(self, probe: Probe) -> None:
        self.probe = probe
        self.events: list[Event] = []
        self.of: dict[int, list[Event]] = defaultdict(list)

    def until(self, done: Callable[[], bool], what: str, pids: list[int] = (), timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                seen = {pid: self.kinds(pid) for pid in pids}
                pytest.fail(f"not within {timeout} s: {what}; seen {seen}; probe stats {self.probe.stats()}")
            self.take(self.probe.poll(0.05))

    def take(self, events: list[Event]) -> None:
        for event in events:
            self.events.append(event)
            self.of[event.pid].append(event)

    def kinds(self, pid: int) -> list[str]:
        return [e.kind.value for e in self.of[pid]]

    def ended(self, pid: int) -> bool:
        """Whether `pid`'s reap came, in a reap or in a record of its whole life."""
        return bool({"reap", "brief", "exec_brief"} & set(self.kinds(pid)))

    def children(self, spawner: int) -> list[Event]:
        """The records of `spawner`'s children whose parent they name."""
        return [e for e in self.events if e.pid and e.ppid == spawner and e.kind.value in ("fork", "brief", "exec_brief")]

    def tallied(self, spawner: int) -> int:
        """Children of `spawner` told in tallies."""
        return sum(e.count for e in self.of[0] if isinstance(e, Tally) and e.ppid == spawner)

    def exec_lives(self, spawner: int) -> int:
        """Children of `spawner` that ended, told by pid (in one record, or, if the sweep told
        one first, as fork, exec, exit and reap) or in exec tallies."""
        tallied = sum(e.count for e in self.of[0] if isinstance(e, ExecTally) and e.ppid == spawner)
        return tallied + sum(self.ended(e.pid) for e in self.children(spawner))

    def lives(self, spawner: int) -> int:
        """Children of `spawner` told, tallied or by pid."""
        forked = {e.pid for e in self.events if e.pid and e.kind.value in ("fork", "brief") and e.ppid == spawner}
        return self.tallied(spawner) + len(forked)


def whole_life(events: list[Event]) -> bool:
    """One Brief, or fork, exit and reap in that order, with times that agree."""
    if [e.kind.value for e in events] == ["brief"]:
        (brief,) = events
        return brief.ts <= brief.exited_at <= brief.reaped_at
    if [e.kind.value for e in events] == ["fork", "exit", "reap"]:
        return events[0].ts <= events[1].ts <= events[2].ts
    return False


def run_family(compact_lives: bool) -> tuple[Stream, dict, int, dict]:
    """FAMILY under a probe: its events, once every one of its processes came whole
    (the zombie but its reap); the pids it made; its own pid; the probe's stats."""
    with watch_probe(compact_lives=compact_lives) as probe:
        stream = Stream(probe)
        family = subprocess.Popen([sys.executable, "-c", FAMILY], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  text=True)
        try:
            made = json.loads(family.stdout.readline())
            brief, sleeper, zombie = made["brief"], made["sleeper"], made["zombie"]
            # A sleeper's and a zombie's forks are held without a record: the sweep tells them.
            stream.until(lambda: stream.kinds(sleeper) == ["fork"] and stream.kinds(zombie) == ["fork", "exit"],
                         "the sleeper's fork and the zombie's fork and exit, from the sweep")
            assert family.stdout.readline() == "reaped\n"
            stream.until(lambda: stream.kinds(sleeper) == ["fork", "exit", "reap"], "the sleeper's exit and reap")
            stream.until(lambda: stream.tallied(family.pid) + sum(bool(stream.of[pid]) for pid in brief)
                         >= BRIEF_CHILDREN, "every child that did nothing, by pid or in a tally", brief)
            stream.until(lambda: all(stream.ended(made[name]) for name in ("execer", "forker", "twice", "exec_forker")),
                         "the ends of the children that exec'd and of the ones that forked")
            stream.until(lambda: stream.ended(made["exec_sleeper"]), "the end of the child that exec'd and slept")
            stream.until(lambda: stream.lives(made["forker"]) == 1, "the grandchild")
            assert stream.kinds(zombie) == ["fork", "exit"]  # still a zombie: no reap
        finally:
            family.stdin.close()
            family.wait(timeout=30)
        stream.take(probe.drain())
        return stream, made, family.pid, probe.stats()


def test_each_shape_of_process_arrives_once_and_whole():
    stream, made, family, stats = run_family(compact_lives=False)
    brief, sleeper, zombie = made["brief"], made["sleeper"], made["zombie"]
    for pid in brief:
        (event,) = stream.of[pid]
        assert isinstance(event, Brief) and event.ppid == family
        assert event.comm and event.comm == stream.of[sleeper][0].comm  # the parent's, as a fork's
        assert event.ts <= event.exited_at <= event.reaped_at
    assert stream.kinds(made["execer"]) == ["fork", "exec", "exit", "reap"]
    assert stream.of[made["execer"]][1].argv == ("true",)
    assert stream.kinds(made["exec_sleeper"]) == ["fork", "exec", "exit", "reap"]
    assert stream.kinds(made["twice"]) == ["fork", "exec", "exec", "exit", "reap"]
    assert stream.kinds(made["forker"]) == ["fork", "exit", "reap"]
    assert stream.kinds(made["grandchild"]) == ["brief"]
    assert stream.of[made["grandchild"]][0].ppid == made["forker"]
    order = [(e.kind.value, e.pid) for e in stream.events]
    assert order.index(("fork", made["forker"])) < order.index(("brief", made["grandchild"]))  # parent first
    for pid in (sleeper, zombie, made["execer"], made["forker"]):
        fork = stream.of[pid][0]
        assert fork.ppid == family and all(e.ts >= fork.ts for e in stream.of[pid])
    assert stats["lost"] == 0 and stats["decode_errors"] == 0
    assert stats["swept_forks"] >= 2 and stats["swept_exits"] >= 1


@pytest.mark.parametrize("birth_slots", [4, None], ids=["4 birth slots", "default birth slots"])
def test_processes_sharing_birth_slots_are_each_told_whole(birth_slots):
    with watch_probe(birth_slots=birth_slots) as probe:
        stream = Stream(probe)
        crowd = subprocess.Popen([sys.executable, "-c", CROWD], stdout=subprocess.PIPE, text=True)
        children = json.loads(crowd.communicate(timeout=60)[0])
        stream.until(lambda: all(whole_life(stream.of[pid]) for pid in children), "a whole life of every child",
                     children)
        stats = probe.stats()
    assert all(stream.of[pid][0].ppid == crowd.pid for pid in children)
    assert stats["lost"] == 0 and stats["decode_errors"] == 0
    if birth_slots == 4:
        # 40 children held at once in 4 slots: most were flushed by the next fork, and told as fork, exit, reap.
        assert sum(stream.kinds(pid) == ["fork", "exit", "reap"] for pid in children) >= 40 - 2 * birth_slots
    else:
        assert sum(stream.kinds(pid) == ["brief"] for pid in children) >= 36  # the 4 sleepers may be swept


def test_with_tallies_short_lives_are_counted_per_spawner_and_every_other_process_told_as_before():
    stream, made, family, stats = run_family(compact_lives=True)
    brief, sleeper = made["brief"], made["sleeper"]
    tallies = [e for e in stream.of[0] if e.ppid == family]
    assert tallies and all(isinstance(t, Tally) and t.comm == stream.of[sleeper][0].comm for t in tallies)
    assert all(t.ts <= t.exited_at <= t.reaped_at for t in tallies)
    assert stream.tallied(family) + sum(len(stream.of[pid]) for pid in brief) == BRIEF_CHILDREN
    assert all(stream.kinds(pid) in ([], ["brief"], ["fork", "exit", "reap"]) for pid in brief)
    assert stream.kinds(made["forker"]) == ["fork", "exit", "reap"]
    assert stats["lost"] == 0 and stats["decode_errors"] == 0


def test_with_compact_lives_a_short_exec_d_life_comes_in_one_record_and_any_other_as_before():
    stream, made, family, stats = run_family(compact_lives=True)
    # Forked, exec'd, exited and reaped with nothing between: one record, its exec's argv.
    (execer,) = stream.of[made["execer"]]
    assert isinstance(execer, ExecBrief) and execer.ppid == family and execer.comm == "true"
    assert execer.argv == ("true",) and execer.filename == "/bin/true" and not execer.argv_truncated
    assert execer.ts <= execer.execed_at <= execer.exited_at <= execer.reaped_at
    # One that lived on after its exec: the sweep told its fork and exec (argv read from the
    # kernel's held slot), its whole record then only its exit and reap.
    assert stream.kinds(made["exec_sleeper"]) == ["fork", "exec", "exit", "reap"]
    assert stream.of[made["exec_sleeper"]][1].argv == ("sleep", "2")
    # A second exec sends the first one held, then goes out itself.
    assert stream.kinds(made["twice"]) == ["fork", "exec", "exec", "exit", "reap"]
    assert [e.argv for e in stream.of[made["twice"]][1:3]] == [("sh", "-c", "exec /bin/true twice"),
                                                                ("/bin/true", "twice")]
    # One that forks sends its fork and held exec before its child's record.
    assert stream.kinds(made["exec_forker"]) == ["fork", "exec", "exit", "reap"]
    [child] = stream.children(made["exec_forker"])
    assert isinstance(child, ExecBrief) and child.argv == ("/bin/true", "forked")
    order = [(e.kind.value, e.pid) for e in stream.events]
    assert order.index(("exec", made["exec_forker"])) < order.index(("exec_brief", child.pid))
    assert stats["lost"] == 0 and stats["decode_errors"] == 0


STORM = """
import os, sys
for _ in range(int(sys.argv[1])):
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
"""


def test_a_fork_storm_comes_as_few_tallies_and_every_child_counts_once():
    children = 3000
    with watch_probe(compact_lives=True) as probe:
        stream = Stream(probe)
        storm = subprocess.Popen([sys.executable, "-c", STORM, str(children)])
        assert storm.wait(timeout=120) == 0
        stream.until(lambda: stream.lives(storm.pid) >= children, "every child, tallied or by pid")
        stream.take(probe.drain())
        stats = probe.stats()
    assert stream.lives(storm.pid) == children  # none twice
    tallies = [e for e in stream.of[0] if e.ppid == storm.pid]
    assert len(tallies) < children / 20 and stream.tallied(storm.pid) > children * 0.9
    assert stats["lost"] == 0 and stats["decode_errors"] == 0


# Children that each exec /bin/true with the same command line (a leak's), or each its own.
EXEC_STORM = """
import os, sys
children, same = int(sys.argv[1]), sys.argv[2] == "same"
for i in range(children):
    pid = os.fork()
    if pid == 0:
        os.execv("/bin/true", ["true", "same" if same else f"child-{i}"])
    os.waitpid(pid, 0)
"""


def exec_storm(children: int, same: bool) -> tuple[Stream, int, dict]:
    """EXEC_STORM under a watch probe: its events once every child came, its pid, the probe's stats."""
    with watch_probe(compact_lives=True) as probe:
        stream = Stream(probe)
        storm = subprocess.Popen([sys.executable, "-c", EXEC_STORM, str(children), "same" if same else "distinct"])
        # Polled as it runs, as watch polls: the first child's record tells the probe its
        # command line, and only from then on does the kernel count such children.
        stream.until(lambda: storm.poll() is not None, "the storm's end", timeout=120)
        assert storm.returncode == 0
        stream.until(lambda: stream.exec_lives(storm.pid) >= children, "every child, tallied or by pid")
        stream.take(probe.drain())
        return stream, storm.pid, probe.stats()


def test_an_exec_storm_of_one_command_line_comes_as_few_exec_tallies_that_name_it():
    children = 2000
    stream, storm, stats = exec_storm(children, same=True)
    assert stream.exec_lives(storm) == children  # none twice
    tallies = [e for e in stream.of[0] if e.ppid == storm]
    assert tallies and all(isinstance(t, ExecTally) for t in tallies)
    assert all(t.argv == ("true", "same") and t.comm == "true" and t.filename == "/bin/true" for t in tallies)
    # Most children are counted: a child that outlives the tally's 0.125 s (a loaded host)
    # comes by pid, as does the first, which tells the probe the command line.
    assert len(tallies) < children / 20 and sum(t.count for t in tallies) > children / 2
    assert all(e.argv == ("true", "same") for e in stream.children(storm) if isinstance(e, ExecBrief))
    assert stats["lost"] == 0 and stats["decode_errors"] == 0 and stats["exec_tallies_untold"] == 0


def test_an_exec_storm_of_distinct_command_lines_comes_as_one_exec_brief_a_child():
    children = 300
    stream, storm, stats = exec_storm(children, same=False)
    told = stream.children(storm)
    assert stream.exec_lives(storm) == children == len(told)  # each by pid, none counted
    briefs = [e for e in told if isinstance(e, ExecBrief)]
    assert len(briefs) > children / 2  # the rest outlived the sweep's hold on a loaded host: told as four
    assert all(b.ts <= b.execed_at <= b.exited_at <= b.reaped_at for b in briefs)
    argvs = [b.argv for b in briefs] + [e.argv for c in told if not isinstance(c, ExecBrief)
                                        for e in stream.of[c.pid] if e.kind.value == "exec"]
    assert sorted(argv[1] for argv in argvs) == sorted(f"child-{i}" for i in range(children))
    assert stats["lost"] == 0 and stats["decode_errors"] == 0


def test_with_compact_lives_a_container_engine_client_s_exec_goes_out_at_once(tmp_path):
    # Its environment names the engine it talks to: read from /proc while it runs, so its
    # exec is never held, however short its life.
    docker = tmp_path / "docker"
    shutil.copy("/bin/true", docker)
    with watch_probe(compact_lives=True) as probe:
        stream = Stream(probe)
        client = subprocess.Popen([str(docker), "ps"])
        client.wait(timeout=30)
        stream.until(lambda: stream.ended(client.pid), "the client's end", [client.pid])
    assert stream.kinds(client.pid) == ["fork", "exec", "exit", "reap"]
    assert stream.of[client.pid][1].argv == (str(docker), "ps")
