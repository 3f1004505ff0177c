"""`spawnwatch reap`: the plan picks exactly one group (pure), the gate lets through only
a group a rule of `watch` flags (never init's or reap's own ancestry), and ending it on
real processes ends the group's members and their subtrees, and nothing else."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import threading

import psutil
import pytest

from conftest import wait_for
from click.testing import CliRunner

from spawnwatch.adapters import procfs
from spawnwatch.cli.reap import command as reap_command
from spawnwatch.config import load
from spawnwatch.events import ProcessInfo, Snapshot
from spawnwatch.pipeline import judge
from spawnwatch.reap import GroupId, Interrupted, Selection, SelectionError, end_processes, flagged, plan, refusal
from spawnwatch.signature import Signer

SIGNER = Signer(load().signature)
NPM_EXEC = ("node", "/usr/bin/npm", "exec", "--yes", "--package=@21st-dev/magic@0.2.3", "--", "magic")


def sign(p: ProcessInfo) -> str:
    return SIGNER(p.argv, p.comm)


def proc(pid: int, ppid: int, start: float, *argv: str, cgroup: str = "") -> ProcessInfo:
    return ProcessInfo(pid=pid, ppid=ppid, start=start, comm=os.path.basename(argv[0]), argv=argv, cgroup_path=cgroup)


def container_of(p: ProcessInfo) -> str | None:
    return p.cgroup_path or None


# A supervisor (100) with four npm exec children, each with a node grandchild; an unrelated
# sibling; and a second supervisor (300) in a container with its own npm exec child.
TABLE = [
    proc(1, 0, 0.0, "/sbin/init"),
    proc(100, 1, 1.0, "node", "supervisor.js"),
    *(proc(110 + i, 100, 10.0 + i, *NPM_EXEC) for i in range(4)),
    *(proc(120 + i, 110 + i, 10.5 + i, "node", "/root/.npm/_npx/ab12/node_modules/.bin/magic") for i in range(4)),
    proc(130, 100, 5.0, "node", "metrics-exporter.js"),
    proc(300, 1, 2.0, "node", "supervisor.js", cgroup="c0ffee"),
    proc(310, 300, 20.0, *NPM_EXEC, cgroup="c0ffee"),
]


def test_the_plan_ends_all_but_the_newest_members_with_their_subtrees() -> None:
    chosen = plan(TABLE, Selection("npm exec magic", spawner=100, keep=1), sign, container_of)
    assert chosen.signature == "npm exec magic"
    assert chosen.spawner.pid == 100
    assert [p.pid for p in chosen.kept] == [113]
    assert [p.pid for p in chosen.members] == [110, 111, 112]
    assert {(t.process.pid, t.member) for t in chosen.targets} == {
        (110, 110), (120, 110), (111, 111), (121, 111), (112, 112), (122, 112),
    }


def test_a_command_line_selects_its_signature() -> None:
    chosen = plan(TABLE, Selection("npx -y @21st-dev/magic", spawner=100), sign, container_of)
    assert [p.pid for p in chosen.members] == [110, 111, 112, 113]


def test_an_ambiguous_selection_names_the_groups_to_choose_from() -> None:
    with pytest.raises(SelectionError) as raised:
        plan(TABLE, Selection("npm exec magic"), sign, container_of)
    message = str(raised.value)
    assert "--spawner 100 (4 processes)" in message
    assert "--spawner 300 --container c0ffee (1 processes)" in message
    chosen = plan(TABLE, Selection("npm exec magic", container="c0f"), sign, container_of)
    assert [t.process.pid for t in chosen.targets] == [310]


def test_nothing_matching_is_an_error() -> None:
    with pytest.raises(SelectionError, match="no process"):
        plan(TABLE, Selection("npm exec magic", spawner=130), sign, container_of)
    with pytest.raises(SelectionError, match="no process"):
        plan(TABLE, Selection("node it's", spawner=100), sign, container_of)


def test_keeping_more_than_the_group_ends_nothing() -> None:
    chosen = plan(TABLE, Selection("npm exec magic", spawner=100, keep=9), sign, container_of)
    assert chosen.targets == () and len(chosen.kept) == 4


# --- the gate -------------------------------------------------------------------------------

# A supervisor (400) that started one `npm exec magic` every 2 s for 20 s and ended none
# (accumulating), and a pool (500) that started 8 workers at once (healthy).
LEAKING = [
    proc(1, 0, 0.0, "/sbin/init"),
    proc(400, 1, 1.0, "node", "supervisor.js"),
    *(proc(410 + i, 400, 10.0 + 2 * i, *NPM_EXEC) for i in range(10)),
    proc(500, 1, 1.0, "gunicorn", "app:main"),
    *(proc(510 + i, 500, 3.0, "gunicorn", "app:main") for i in range(8)),
]


def no_container(cgroup_id: int, pid: int | None) -> None:
    return None


def test_the_rules_of_watch_flag_the_accumulating_group_and_not_the_pool() -> None:
    groups = flagged(judge(load(), Snapshot(ts=40.0, processes=tuple(LEAKING)), resolve_container=no_container))
    assert groups == {GroupId(400, "npm exec magic", None)}


def test_only_a_flagged_group_passes_the_gate_unless_forced() -> None:
    groups = flagged(judge(load(), Snapshot(ts=40.0, processes=tuple(LEAKING)), resolve_container=no_container))
    leak = plan(LEAKING, Selection("npm exec magic", spawner=400, keep=1), sign, container_of)
    pool = plan(LEAKING, Selection("gunicorn app:main", spawner=500), sign, container_of)
    assert refusal(leak, groups, protected={os.getpid()}, force=False) is None
    assert "no rule of `watch`" in refusal(pool, groups, protected={os.getpid()}, force=False)
    assert refusal(pool, groups, protected={os.getpid()}, force=True) is None


def test_init_and_this_commands_ancestry_are_refused_even_when_forced() -> None:
    adopted = [proc(1, 0, 0.0, "/sbin/init"), *(proc(610 + i, 1, 10.0 + 2 * i, *NPM_EXEC) for i in range(10))]
    by_init = plan(adopted, Selection("npm exec magic", spawner=1), sign, container_of)
    flagged_anyway = {by_init.group}
    assert "pid 1" in refusal(by_init, flagged_anyway, protected=set(), force=True)
    leak = plan(LEAKING, Selection("npm exec magic", spawner=400), sign, container_of)
    assert "runs this very command" in refusal(leak, {leak.group}, protected={400, 1}, force=True)


# --- real processes -------------------------------------------------------------------------

# The leaky parent: identical children, each holding a grandchild; one unrelated child.
PARENT = """
for i in 1 2 3 4; do sh -c 'sleep 1001 & wait' leaked-child & sleep 0.05; done
sleep 1002 &
wait
"""
CHILD_SIGNATURE = "sh -c 'sleep 1001 & wait'"



def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def tree(root: psutil.Popen) -> dict[int, list[str]]:
    """Live descendants of `root`: pid -> argv."""
    out = {}
    for p in psutil.Process(root.pid).children(recursive=True):
        try:
            if p.status() != psutil.STATUS_ZOMBIE:
                out[p.pid] = p.cmdline()
        except psutil.NoSuchProcess:
            pass
    return out


@pytest.fixture
def leaky_parent():
    parent = psutil.Popen(["sh", "-c", PARENT], start_new_session=True)
    # 4 children with a grandchild each, and the unrelated sleep
    wait_for(lambda: sum(argv[:2] == ["sleep", "1001"] for argv in tree(parent).values()) == 4
             and any(argv[:2] == ["sleep", "1002"] for argv in tree(parent).values()), "the process tree")
    try:
        yield parent
    finally:
        for p in psutil.Process(parent.pid).children(recursive=True):
            p.kill()
        parent.kill()
        parent.wait()


@pytest.fixture
def quick_rules(tmp_path) -> str:
    """Thresholds under which the leaky parent's four children, 0.05 s apart, accumulate."""
    path = tmp_path / "quick.toml"
    path.write_text("[rules.accumulating]\nmin_live = 3\nmin_gap_s = 0.01\nmin_growth = 3\n")
    return str(path)


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(reap_command, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def reap(*args: str) -> dict:
    exit_code, output = invoke(*args, "--json")
    assert exit_code == 0, output
    return json.loads(output)


def test_a_dry_run_ends_nothing_and_keeps_the_newest_by_default(leaky_parent, quick_rules) -> None:
    before = tree(leaky_parent)
    newest = max((pid for pid, argv in before.items() if argv[:2] == ["sh", "-c"]),
                 key=lambda pid: (psutil.Process(pid).create_time(), pid))
    record = reap("--signature", CHILD_SIGNATURE, "--spawner", str(leaky_parent.pid), "--config", quick_rules)
    assert record["dry_run"] is True and record["refused"] is None
    assert record["kept"] == [newest]
    assert len(record["targets"]) == 6 and record["rss_bytes"] > 0
    assert tree(leaky_parent) == before


def test_a_group_no_rule_flags_is_refused_and_left_alone(leaky_parent) -> None:
    # Four children are no leak under the default thresholds.
    before = tree(leaky_parent)
    selection = ("--signature", CHILD_SIGNATURE, "--spawner", str(leaky_parent.pid))
    record = reap(*selection)
    assert "no rule of `watch`" in record["refused"]
    exit_code, output = invoke(*selection, "--yes")
    assert exit_code == 1
    assert output.count("\n") == 1 and output.startswith("Error: refused: no rule of `watch`")
    assert tree(leaky_parent) == before
    forced = reap(*selection, "--keep", "0", "--force")
    assert forced["refused"] is None and len(forced["targets"]) == 8


def test_a_group_of_init_or_of_reap_itself_is_refused_even_when_forced() -> None:
    # Dry runs only: the refusal must hold whatever runs on this host under pid 1.
    snapshot = procfs.snapshot()
    (adopted, *_) = [p for p in snapshot.processes if p.ppid == 1]
    record = reap("--signature", sign(adopted), "--spawner", "1", "--force")
    assert "pid 1" in record["refused"]
    exit_code, output = invoke("--signature", sign(adopted), "--spawner", "1", "--force", "--yes")
    assert exit_code == 1 and output.startswith("Error: refused: the spawner is pid 1")
    # CliRunner runs reap in this very process: children of the test are children of reap.
    children = [subprocess.Popen(["sleep", "1005"]) for _ in range(3)]
    try:
        record = reap("--signature", "sleep 1005", "--spawner", str(os.getpid()), "--force")
        assert "runs this very command" in record["refused"]
        exit_code, _ = invoke("--signature", "sleep 1005", "--spawner", str(os.getpid()), "--force", "--yes")
        assert exit_code == 1 and all(child.poll() is None for child in children)
    finally:
        for child in children:
            child.kill()
            child.wait()


def test_reap_ends_exactly_the_group_and_its_subtrees(leaky_parent, quick_rules) -> None:
    before = tree(leaky_parent)
    members = sorted((pid for pid, argv in before.items() if argv[:2] == ["sh", "-c"]),
                     key=lambda pid: psutil.Process(pid).create_time())
    newest = members[-1]
    record = reap("--signature", CHILD_SIGNATURE, "--spawner", str(leaky_parent.pid), "--keep", "1", "--yes",
                  "--grace", "10", "--config", quick_rules)
    ended = set(record["ended"])
    newest_grandchild = next(p.pid for p in psutil.Process(newest).children())
    expected = set(before) - {newest, newest_grandchild} - {pid for pid, argv in before.items() if argv[:2] == ["sleep", "1002"]}
    assert ended == expected
    assert record["kept"] == [newest]
    assert record["rss_freed_bytes"] > 0 and record["survived"] == []
    for pid in ended:
        wait_for(lambda: not alive(pid), f"{pid} to end")
    after = tree(leaky_parent)
    assert set(after) == set(before) - ended
    assert alive(leaky_parent.pid)


def test_children_spawned_after_the_plan_end_with_their_parent() -> None:
    # A member that keeps forking: what it forks between the plan and the freeze must not
    # survive it as an orphan.
    parent = psutil.Popen(
        ["sh", "-c", "for i in 1 2; do sh -c 'while :; do sleep 1003 & sleep 0.05; done' forker & done; wait"],
        start_new_session=True,
    )
    try:
        wait_for(lambda: len(tree(parent)) >= 4, "the forkers")
        chosen = plan(procfs.snapshot().processes, Selection("sh -c 'while :; do sleep 1003 & sleep 0.05; done'",
                                                             spawner=parent.pid), sign, container_of)
        planned = {t.process.pid for t in chosen.targets}
        wait_for(lambda: set(tree(parent)) - planned, "a child forked after the plan")
        outcome = end_processes(chosen, grace=10)
        assert not outcome.survived
        wait_for(lambda: not tree(parent), "every forker and sleep to end")
    finally:
        for p in psutil.Process(parent.pid).children(recursive=True):
            p.kill()
        parent.kill()
        parent.wait()


def test_a_reused_pid_is_never_signalled() -> None:
    # The plan saw another process under this pid (another start time): the one there now
    # must be left alone.
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1000)"])
    try:
        real = procfs.start_time(bystander.pid)
        ghost = ProcessInfo(pid=bystander.pid, ppid=os.getpid(), start=real - 50.0, comm="sleep", argv=("sleep", "9"))
        chosen = plan([ghost], Selection("sleep 9"), sign, container_of)
        outcome = end_processes(chosen, grace=1)
        assert [p.pid for p in outcome.gone] == [bystander.pid] and not outcome.ended
        assert bystander.poll() is None and psutil.Process(bystander.pid).status() != psutil.STATUS_STOPPED
    finally:
        bystander.kill()
        bystander.wait()


# --- no target left frozen -------------------------------------------------------------------


def state_of(pid: int) -> str | None:
    """The one-letter state of /proc/<pid>/stat ('T': stopped), None when gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0].decode()
    except FileNotFoundError:
        return None


def none_stopped(pids) -> bool:
    return all(state_of(pid) not in ("T", None) for pid in pids)


def raise_if_delivered(signum: int, _frame) -> None:
    raise RuntimeError(f"{signal.Signals(signum).name} reached the test, not reap's cleanup")


@pytest.mark.root
@pytest.mark.parametrize("interruption", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_an_interruption_while_targets_are_stopped_resumes_them_all(leaky_parent, monkeypatch, interruption) -> None:
    chosen = plan(procfs.snapshot().processes, Selection(CHILD_SIGNATURE, spawner=leaky_parent.pid), sign,
                  container_of)
    pids = [t.process.pid for t in chosen.targets]
    sweep = procfs.snapshot

    def interrupted_sweep(*args):
        # The hook: the first sweep runs once every target was sent SIGSTOP; the signal
        # comes once /proc shows them all stopped.
        wait_for(lambda: all(state_of(pid) == "T" for pid in pids), "every target stopped")
        os.kill(os.getpid(), interruption)
        return sweep(*args)

    monkeypatch.setattr(procfs, "snapshot", interrupted_sweep)
    previous = signal.signal(interruption, raise_if_delivered if interruption != signal.SIGINT else signal.default_int_handler)
    # Another thread, as a library may start: the kernel hands the signal to it when the main
    # thread holds it back.
    idle = threading.Event()
    other = threading.Thread(target=idle.wait, daemon=True)
    other.start()
    try:
        with pytest.raises(Interrupted) as raised:
            end_processes(chosen, grace=10)
    finally:
        signal.signal(interruption, previous)
        idle.set()
        other.join()
    assert raised.value.signal == interruption
    wait_for(lambda: none_stopped(pids), "every target to run again")
    assert all(alive(pid) for pid in pids)  # nothing ended


@pytest.mark.root
def test_running_out_of_open_files_resumes_every_target_and_says_so() -> None:
    # 30 members with a child each, and a limit that lets reap hold only some of them.
    parent = psutil.Popen(["sh", "-c", "for i in $(seq 30); do sh -c 'sleep 1001 & wait' leaked-child & done; wait"],
                          start_new_session=True)
    try:
        wait_for(lambda: sum(argv[:2] == ["sleep", "1001"] for argv in tree(parent).values()) == 30, "the leak")
        pids = list(tree(parent))

        def few_open_files() -> None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (32, 32))

        result = subprocess.run(
            [sys.executable, "-m", "spawnwatch", "reap", "--signature", CHILD_SIGNATURE, "--spawner", str(parent.pid),
             "--keep", "0", "--force", "--yes"],
            preexec_fn=few_open_files, capture_output=True, text=True, timeout=120,
        )
        assert result.returncode == 1, result.stdout + result.stderr
        assert result.stderr.startswith("Error: the open-files limit leaves room to hold ")
        assert result.stderr.rstrip().endswith("every process it had stopped was resumed; nothing ended")
        assert "Traceback" not in result.stderr
        wait_for(lambda: none_stopped(pids), "every target to run again")
        assert set(tree(parent)) == set(pids)  # nothing ended
    finally:
        for p in psutil.Process(parent.pid).children(recursive=True):
            p.kill()
        parent.kill()
        parent.wait()


# --- what the operator reviews ----------------------------------------------------------------

HOSTILE = "\x1b[2J\x1b[H\x1b]0;pwned\x07all clear"  # clear the screen, retitle the terminal


def read_pty(master: int) -> bytes:
    out = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: every writer closed the other end
            return out
        if not chunk:
            return out
        out += chunk


def test_the_dry_run_in_a_terminal_shows_escapes_in_argv_never_obeys_them() -> None:
    parent = psutil.Popen(["sh", "-c", "for i in 1 2 3; do sh -c 'sleep 1001 & wait' \"$HOSTILE\" & done; wait"],
                          env={**os.environ, "HOSTILE": HOSTILE}, start_new_session=True)
    try:
        wait_for(lambda: sum(argv[:2] == ["sleep", "1001"] for argv in tree(parent).values()) == 3, "the leak")
        member = next(p for p in procfs.snapshot().processes if p.ppid == parent.pid)
        assert member.argv[-1] == HOSTILE
        master, terminal = os.openpty()
        try:
            reap_run = subprocess.Popen(
                [sys.executable, "-m", "spawnwatch", "reap", "--signature", sign(member),
                 "--spawner", str(parent.pid), "--keep", "0", "--force"],
                stdin=subprocess.DEVNULL, stdout=terminal, stderr=terminal,
            )
            os.close(terminal)
            shown = read_pty(master).decode()
            assert reap_run.wait(timeout=60) == 0, shown
        finally:
            os.close(master)
        assert "\x1b" not in shown and "\x07" not in shown
        assert "would free about" in shown and shown.count("\\x1b[2J\\x1b[H\\x1b]0;pwned\\x07all clear") == 3
    finally:
        for p in psutil.Process(parent.pid).children(recursive=True):
            p.kill()
        parent.kill()
        parent.wait()
