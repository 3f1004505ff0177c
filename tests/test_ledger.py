"""The ledger of a live `watch`: its firing alerts in <state_dir>/alerts.json, written
atomically (0600 in a 0700 directory) only when they change, one watch per directory,
trusted by readers only while its writer lives, and never when another user could have
written it."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import uuid

import pytest
from click.testing import CliRunner

from conftest import NOBODY, REPO, wait_for
from spawnwatch.adapters import ledger, procfs
from spawnwatch.cli.reap import command as reap_command
from spawnwatch.cli.watch import command as watch_command
from spawnwatch.runner import ready_record
from spawnwatch.sinks import ledger_first
from spawnwatch.sinks.ledger import Ledger, LedgerBusy


def alert(state: str = "firing", orphans: int = 9, pid: int | None = None, rule: str = "orphaned_containers",
          **extra) -> dict:
    return {
        "kind": "alert", "state": state, "rule": rule, "severity": "warning",
        "signature": "docker run mcp/github stdio",
        "spawner": {"pid": pid or os.getpid(), "ppid": 1, "argv": ["node", "host.js"], "comm": "node"},
        "container": None, "live": 0, "spawned": orphans, "exited": orphans, "zombies": 0, "orphans": orphans,
        "rss_bytes": 0, "pids": [], "message": f"{orphans} containers left running",
        "containers": [{"id": f"{i:064x}", "name": f"c{i}", "image": "mcp/github", "memory_bytes": 1 << 20}
                       for i in range(orphans)],
        "time": "2026-11-29T23:20:29.123Z", "host": "vm", **extra,
    }


class Writes:
    """The versions of the file seen, each by its inode (a rename brings a new one) and its
    time of writing (an inode number may be reused two writes later)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.versions: list[tuple[int, float]] = []

    def look(self) -> dict:
        with open(self.path) as f:
            document = json.load(f)
            version = (os.fstat(f.fileno()).st_ino, document["updated_at"])
        if not self.versions or self.versions[-1] != version:
            self.versions.append(version)
        return document


@pytest.fixture
def state_dir(tmp_path) -> str:
    return str(tmp_path / "state")


def test_the_ready_record_writes_an_empty_ledger_only_its_owner_can_read(state_dir) -> None:
    sink = Ledger(state_dir)
    assert not os.path.exists(ledger.ledger_path(state_dir))  # nothing before the probe is ready
    sink.send(ready_record())
    assert stat.S_IMODE(os.stat(state_dir).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(ledger.ledger_path(state_dir)).st_mode) == 0o600
    kept = ledger.read(state_dir)
    assert kept.alerts == () and kept.stale is None
    assert (kept.writer.pid, kept.writer.start) == (os.getpid(), procfs.start_time(os.getpid()))
    assert kept.writer.boot_id == ledger.boot_id()
    assert sorted(os.listdir(state_dir)) == ["alerts.json", "alerts.lock"]  # no temporary file left
    sink.close()


def test_it_is_rewritten_only_when_the_firing_alerts_change(state_dir) -> None:
    sink = Ledger(state_dir, clock=iter(range(100, 200)).__next__)
    writes = Writes(ledger.ledger_path(state_dir))
    sink.send(ready_record())
    writes.look()
    sink.send(alert(orphans=9))
    (entry,) = writes.look()["alerts"]
    assert entry["orphans"] == 9 and len(entry["containers"]) == 9
    assert entry["spawner"]["start"] == procfs.start_time(os.getpid())
    assert entry["firing_since"] == entry["listed_at"] == 100
    sink.send(alert(orphans=9, time="2026-11-29T23:21:00.000Z"))  # re-sent, saying nothing new
    sink.send({"kind": "stats", "events": {}})
    sink.send(alert(state="resolved", rule="zombie"))  # never fired here
    writes.look()
    assert len(writes.versions) == 2
    sink.send(alert(orphans=12))
    (entry,) = writes.look()["alerts"]
    assert (entry["orphans"], entry["firing_since"], entry["listed_at"]) == (12, 100, 101)
    sink.send(alert(rule="accumulating"))
    assert [a["rule"] for a in writes.look()["alerts"]] == ["orphaned_containers", "accumulating"]
    sink.send(alert(state="resolved", orphans=0))
    assert [a["rule"] for a in writes.look()["alerts"]] == ["accumulating"]
    assert len(writes.versions) == 5
    sink.close()
    assert not os.path.exists(writes.path)  # what it lists is watched no more


def test_an_alert_is_in_the_ledger_before_anyone_hears_of_it(state_dir) -> None:
    """Whoever reads an alert on stdout or from a notifier may run `reap` at once, which acts
    only on what the ledger lists: `watch` hands each record to its ledger first."""
    kept = Ledger(state_dir)
    listed_when_shown = []

    class Shown:  # the output and the notifiers, behind the ledger
        def send(self, record: dict) -> None:
            if record.get("kind") == "alert":
                listed_when_shown.append([a["rule"] for a in ledger.read(state_dir).alerts])

        def close(self) -> None:
            pass

    sink = ledger_first(Shown(), kept)
    sink.send(ready_record())
    sink.send(alert(rule="accumulating"))
    sink.close()
    assert listed_when_shown == [["accumulating"]]
    assert ledger_first(shown := Shown(), None) is shown  # no ledger: the output alone


def test_one_watch_keeps_a_state_dir_at_a_time(state_dir) -> None:
    first = Ledger(state_dir)
    with pytest.raises(LedgerBusy, match="kept by another `watch`"):
        Ledger(state_dir)
    first.close()
    Ledger(state_dir).close()


def dead_process() -> tuple[int, float]:
    child = subprocess.Popen(["sleep", "1000"])
    start = procfs.start_time(child.pid)
    child.kill()
    child.wait()
    return child.pid, start


def test_a_reader_trusts_a_ledger_only_while_its_writer_lives(state_dir) -> None:
    os.makedirs(state_dir)
    me = ledger.Writer.running(os.getpid(), "vm", 1.0)
    ledger.write(state_dir, me, [alert()])
    kept = ledger.read(state_dir)
    assert kept.stale is None and kept.alerts[0]["orphans"] == 9
    pid, start = dead_process()
    ledger.write(state_dir, ledger.Writer(pid, start, "vm", me.boot_id, 1.0), [])
    assert ledger.read(state_dir).stale == f"its `watch` (pid {pid}) has ended"
    reused = ledger.Writer(os.getpid(), me.start - 10, "vm", me.boot_id, 1.0)  # our pid, another start
    ledger.write(state_dir, reused, [])
    assert "has ended" in ledger.read(state_dir).stale
    ledger.write(state_dir, ledger.Writer(os.getpid(), me.start, "old", str(uuid.uuid4()), 1.0), [])
    assert ledger.read(state_dir).stale == "written before this host's last boot, by old"


def test_no_ledger_is_none_and_a_broken_one_an_error(state_dir) -> None:
    assert ledger.read(state_dir) is None
    os.makedirs(state_dir)
    path = ledger.ledger_path(state_dir)
    for text, why in (("{", "not a ledger"), ('{"format": 99}', "ledger format 99"), ('{"format": 1}', "not a ledger")):
        with open(path, "w") as f:
            f.write(text)
        with pytest.raises(ledger.LedgerError, match=why):
            ledger.read(state_dir)


@pytest.mark.root
def test_a_failed_write_leaves_the_last_ledger_whole(tmp_path) -> None:
    # A real full filesystem: a tmpfs of 64 KiB.
    state_dir = tmp_path / "small"
    state_dir.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", str(state_dir)], check=True)
    try:
        errors: list[str] = []
        sink = Ledger(str(state_dir), on_error=errors.append)
        sink.send(ready_record())
        sink.send(alert(orphans=3))
        sink.send(alert(orphans=3000))  # about 400 KB of containers: does not fit
        sink.send(alert(orphans=4000))  # the same failure is said once
        assert errors == [f"cannot write the ledger {state_dir}/alerts.json: No space left on device"]
        assert ledger.read(str(state_dir)).alerts[0]["orphans"] == 3
        assert sorted(os.listdir(state_dir)) == ["alerts.json", "alerts.lock"]
        sink.send(alert(orphans=4))  # fits again
        assert ledger.read(str(state_dir)).alerts[0]["orphans"] == 4
        sink.close()
    finally:
        subprocess.run(["umount", str(state_dir)], check=True)


def test_a_replay_keeps_no_ledger(tmp_path) -> None:
    recording = str(REPO / "tests" / "fixtures" / "orphan.msgpack")
    result = CliRunner().invoke(watch_command, ["--replay", recording, "--state-dir", str(tmp_path / "state")])
    assert result.exit_code == 2 and "--state-dir do not apply" in result.output
    assert not (tmp_path / "state").exists()


@pytest.mark.root
def test_a_live_watch_keeps_its_ledger_while_it_runs(tmp_path) -> None:
    state_dir = str(tmp_path / "state")
    watch = subprocess.Popen([sys.executable, "-m", "spawnwatch", "watch", "--json", "--state-dir", state_dir],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        kept = wait_for(lambda: ledger.read(state_dir), "the ledger", deadline=120.0)
        assert kept.writer.pid == watch.pid and kept.stale is None
        again = subprocess.run([sys.executable, "-m", "spawnwatch", "watch", "--duration", "1", "--state-dir", state_dir],
                               capture_output=True, text=True, timeout=120)
        assert again.returncode == 0 and f"no ledger: {state_dir}/alerts.json is kept by another `watch`" in again.stderr
        assert ledger.read(state_dir).writer.pid == watch.pid
    finally:
        watch.terminate()
        out, err = watch.communicate(timeout=60)
    assert watch.returncode == 0, err[-2000:]
    assert ledger.read(state_dir) is None  # removed as the watch ended


# --- a ledger another user could have written ---------------------------------------------------

FORGE = """
import json, os, sys
state_dir, document = sys.argv[1], sys.argv[2]
os.makedirs(state_dir, exist_ok=True)
with open(os.path.join(state_dir, "alerts.json"), "w") as f:
    f.write(document)
"""


def as_nobody(*argv: str) -> None:
    subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *argv],
                   check=True, cwd="/", env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")}, timeout=60)


def forge(state_dir: str, spawner: subprocess.Popen) -> None:
    """As nobody: a ledger as a live `watch` (this test) would write it, naming a container to end."""
    writer = ledger.Writer.running(os.getpid(), "vm", 1.0).as_record()
    document = {"kind": "ledger", "format": 1, "writer": writer, "updated_at": 1.0, "alerts": [{
        **alert(), "signature": "docker run <image> sleep <n>", "listed_at": 2e9,
        "spawner": {"pid": spawner.pid, "ppid": 1, "argv": ["sleep", "1000"], "comm": "sleep",
                    "start": procfs.start_time(spawner.pid)},
    }]}
    as_nobody(os.path.realpath(sys.executable), "-c", FORGE, state_dir, json.dumps(document))


@pytest.fixture
def shared_dir():
    """A directory any user may create in, as /tmp (pytest's own are root's, 0700)."""
    path = tempfile.mkdtemp(prefix="spawnwatch-shared-")
    os.chmod(path, 0o1777)
    yield path
    shutil.rmtree(path)


@pytest.mark.root
def test_a_ledger_another_user_wrote_is_refused_and_reap_ends_nothing_it_names(shared_dir, spawner) -> None:
    state_dir = os.path.join(shared_dir, "state")
    forge(state_dir, spawner)
    with pytest.raises(ledger.UntrustedLedger, match=f"belongs to uid {NOBODY}, not to uid 0"):
        ledger.read(state_dir)
    result = CliRunner().invoke(reap_command, ["--signature", "docker run <image> sleep <n>", "--spawner",
                                               str(spawner.pid), "--state-dir", state_dir, "--yes", "--json"])
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: {state_dir}: the state directory belongs to uid {NOBODY}")
    assert "not trusted" in result.output and '"ended"' not in result.output


@pytest.mark.root
def test_a_state_dir_others_may_write_and_links_in_it_are_refused(shared_dir, spawner) -> None:
    writable = os.path.join(shared_dir, "writable")
    os.mkdir(writable)
    os.chmod(writable, 0o777)  # root's, but anyone may put a ledger in it
    forge(writable, spawner)
    with pytest.raises(ledger.UntrustedLedger, match=r"writable by its group or by others \(mode 0777\)"):
        ledger.read(writable)
    with pytest.raises(ledger.UntrustedLedger, match="writable by its group or by others"):
        Ledger(writable)

    chowned = os.path.join(shared_dir, "chowned")  # root's directory, another user's file
    os.mkdir(chowned, 0o755)
    ledger.write(chowned, ledger.Writer.running(os.getpid(), "vm", 1.0), [alert()])
    os.chown(ledger.ledger_path(chowned), NOBODY, NOBODY)
    with pytest.raises(ledger.UntrustedLedger, match=f"alerts.json: the file belongs to uid {NOBODY}"):
        ledger.read(chowned)
    os.unlink(ledger.ledger_path(chowned))
    os.mkfifo(ledger.ledger_path(chowned), 0o600)  # would block a reader that does not look first
    with pytest.raises(ledger.UntrustedLedger, match="alerts.json: not a regular file"):
        ledger.read(chowned)

    real = os.path.join(shared_dir, "real")  # a trusted ledger, reached through links
    os.mkdir(real, 0o700)
    ledger.write(real, ledger.Writer.running(os.getpid(), "vm", 1.0), [alert()])
    assert ledger.read(real).alerts
    alias = os.path.join(shared_dir, "alias")
    as_nobody("ln", "-s", real, alias)
    for path in (alias, alias + "/"):
        with pytest.raises(ledger.UntrustedLedger, match="a symbolic link or not a directory"):
            ledger.read(path)
    linked = os.path.join(shared_dir, "linked")
    os.mkdir(linked, 0o700)
    os.symlink(ledger.ledger_path(real), ledger.ledger_path(linked))
    with pytest.raises(ledger.UntrustedLedger, match="alerts.json: a symbolic link"):
        ledger.read(linked)

    nobodys = os.path.join(shared_dir, "nobodys")
    as_nobody("mkdir", nobodys)
    with pytest.raises(ledger.UntrustedLedger, match=f"belongs to uid {NOBODY}"):
        Ledger(nobodys)
    assert os.listdir(nobodys) == []  # no lock taken in it
    followed = os.path.join(shared_dir, "followed")
    os.symlink(followed, os.path.join(linked, ledger.LOCK_FILE))
    with pytest.raises(ledger.UntrustedLedger, match="alerts.lock: a symbolic link"):
        Ledger(linked)
    assert not os.path.exists(followed)


# -- containers.json: what a restart reads back ------------------------------------------

def kept_state(state_dir: str, **document) -> None:
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    path = os.path.join(state_dir, ledger.STATE_FILE)
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        json.dump({"kind": "state", "format": ledger.STATE_FORMAT, "boot_id": ledger.boot_id(), "written_at": 0.0,
                   "links": [], **document}, f)


def test_the_container_links_come_back_as_written_and_outlive_a_clean_stop(state_dir) -> None:
    links = [{"container": {"id": "ab" * 32}, "client": {"pid": 1}, "charge": {"signature": "docker run x"}}]
    sink = Ledger(state_dir)
    ledger.write_state(state_dir, links)
    sink.close()  # the ledger of alerts goes, the links stay
    assert not os.path.exists(ledger.ledger_path(state_dir))
    assert ledger.read_state(state_dir) == links
    assert stat.S_IMODE(os.stat(os.path.join(state_dir, ledger.STATE_FILE)).st_mode) == 0o600


def test_links_of_an_earlier_boot_are_not_taken_back(state_dir) -> None:
    kept_state(state_dir, boot_id="another boot", links=[{"container": {}}])
    assert ledger.read_state(state_dir) == []


def test_state_of_a_newer_spawnwatch_is_refused_saying_so(state_dir) -> None:
    kept_state(state_dir, format=ledger.STATE_FORMAT + 1)
    with pytest.raises(ledger.LedgerError, match="written by a newer spawnwatch"):
        ledger.read_state(state_dir)


def test_state_beyond_the_size_cap_is_refused(state_dir) -> None:
    kept_state(state_dir, links=[{"pad": "x" * ledger.MAX_STATE_BYTES}])
    with pytest.raises(ledger.LedgerError, match="larger than"):
        ledger.read_state(state_dir)


def test_a_linked_state_file_is_not_trusted(state_dir, tmp_path) -> None:
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text("{}")
    os.makedirs(state_dir, mode=0o700)
    os.symlink(elsewhere, os.path.join(state_dir, ledger.STATE_FILE))
    with pytest.raises(ledger.UntrustedLedger):
        ledger.read_state(state_dir)
