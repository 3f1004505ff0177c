"""`spawnwatch trace` on the real kernel: each test runs its own workload and
looks for its own pids, so other activity on the host never matters."""

from __future__ import annotations

import ctypes
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from conftest import REPO
from live import LiveCommand
from spawnwatch.probe.program import feature_flags, program_text, compact_flags

pytestmark = pytest.mark.root


def events_of(records: list[dict], pid: int) -> list[dict]:
    return [r for r in records if r.get("pid") == pid and r["kind"] in ("fork", "exec", "exit", "reap", "oom")]


def kinds(records: list[dict]) -> list[str]:
    return [r["kind"] for r in records]


def test_marker_command_yields_fork_exec_exit_reap_in_order():
    marker = f"spawnwatch-marker-{uuid.uuid4().hex}"
    with LiveCommand("trace", "--json") as trace:
        proc = subprocess.Popen(["/bin/sh", "-c", f"exec /bin/true {marker}"])
        proc.wait()
        trace.wait_for(lambda rs: any(r["kind"] == "reap" and r["pid"] == proc.pid for r in rs), f"the reap of {proc.pid}")
    ours = events_of(trace.records, proc.pid)
    assert kinds(ours) == ["fork", "exec", "exec", "exit", "reap"], ours
    fork, exec_sh, exec_true, exit_, reap = ours
    assert fork["ppid"] == os.getpid()
    assert exec_true["argv"] == ["/bin/true", marker]
    assert exec_true["filename"] == "/bin/true" and exec_true["comm"] == "true"
    assert exec_true["argv_truncated"] is False
    assert fork["ts"] <= exec_true["ts"] <= exit_["ts"] <= reap["ts"]
    assert reap["ppid"] == os.getpid() and reap["comm"] == "true"
    assert {r["cgroup_id"] for r in (fork, exec_true, exit_, reap)} == {fork["cgroup_id"]}
    ready = trace.records[0]
    assert {k: ready[k] for k in ("kind", "pid", "host")} == {"kind": "ready", "pid": trace.proc.pid,
                                                               "host": socket.gethostname()}
    assert abs(ready["boot_time"] + time.clock_gettime(time.CLOCK_BOOTTIME) - time.time()) < 1
    assert trace.stats["lost"] == 0
    assert trace.returncode == 0


def test_threads_yield_no_fork_events():
    program = (
        "import threading, time\n"
        "threads = [threading.Thread(target=time.sleep, args=(0.5,)) for _ in range(20)]\n"
        "[t.start() for t in threads]; [t.join() for t in threads]\n"
    )
    with LiveCommand("trace", "--json") as trace:
        proc = subprocess.Popen([sys.executable, "-c", program])
        proc.wait()
        trace.wait_for(lambda rs: any(r["kind"] == "reap" and r["pid"] == proc.pid for r in rs), f"the reap of {proc.pid}")
    children = [r for r in trace.records if r["kind"] == "fork" and r["ppid"] == proc.pid]
    assert children == []
    assert kinds(events_of(trace.records, proc.pid)).count("exit") == 1
    assert kinds(events_of(trace.records, proc.pid)).count("reap") == 1


def test_zombie_shows_exit_and_reap_at_least_a_second_apart():
    # The parent forks a child that exits at once, then sleeps before waiting.
    program = (
        "import os, time\n"
        "pid = os.fork()\n"
        "if pid == 0: os._exit(0)\n"
        "print(pid, flush=True); time.sleep(1.2); os.waitpid(pid, 0)\n"
    )
    with LiveCommand("trace", "--json") as trace:
        out = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=True)
        child = int(out.stdout)
        trace.wait_for(lambda rs: any(r["kind"] == "reap" and r["pid"] == child for r in rs), f"the reap of {child}")
    ours = {r["kind"]: r for r in events_of(trace.records, child)}
    assert ours["reap"]["ts"] - ours["exit"]["ts"] >= 1.0


def test_forty_arguments_are_truncated_without_crash():
    args = [f"argument-{i:02d}" for i in range(40)]
    with LiveCommand("trace", "--json") as trace:
        proc = subprocess.Popen(["/bin/true", *args])
        proc.wait()
        trace.wait_for(lambda rs: any(r["kind"] == "exec" and r["pid"] == proc.pid for r in rs), f"the exec of {proc.pid}")
    (exec_,) = [r for r in events_of(trace.records, proc.pid) if r["kind"] == "exec"]
    assert exec_["argv_truncated"] is True
    assert exec_["argv"][0] == "/bin/true" and exec_["argv"][1:] == args[: len(exec_["argv"]) - 1]
    assert 16 <= len(exec_["argv"]) < 41
    assert trace.stats["lost"] == 0


def test_an_argument_longer_than_a_read_is_cut_and_flagged_and_one_that_fits_is_not():
    header = (REPO / "bpf" / "spawnwatch.h").read_text()
    cap = int(re.search(r"#define SW_ARG_MAX_BYTES (\d+)", header).group(1)) - 1  # one read holds its NUL too
    with LiveCommand("trace", "--json") as trace:
        procs = {size: subprocess.Popen(["/bin/true", "x" * size]) for size in (cap - 1, cap + 100)}
        for proc in procs.values():
            proc.wait()
        trace.wait_for(lambda rs: {r["pid"] for r in rs if r["kind"] == "exec"} >= {p.pid for p in procs.values()},
                       "both execs")
    fits, cut = ([r for r in events_of(trace.records, procs[size].pid) if r["kind"] == "exec"][0]
                 for size in (cap - 1, cap + 100))
    assert fits["argv"] == ["/bin/true", "x" * (cap - 1)] and fits["argv_truncated"] is False
    assert cut["argv"] == ["/bin/true", "x" * cap] and cut["argv_truncated"] is True


@pytest.mark.parametrize("tallies", [False, True], ids=["trace", "watch"])
def test_every_program_passes_the_verifier_in_few_steps(tallies):
    """At load the verifier walks each path of a program: the argv loop, with a path it
    could not merge, took it 445,000 steps of its 1,000,000 and over a second of every
    start-up.  The kernel counts them (fdinfo's verified_insns, since 5.16)."""
    from bcc import BPF

    flags = feature_flags() + (compact_flags() if tallies else []) + ["-Wno-macro-redefined"]
    bpf = BPF(text=program_text().encode(), cflags=flags)
    try:
        steps = {}
        for name, function in bpf.funcs.items():
            info = Path(f"/proc/self/fdinfo/{function.fd}").read_text()
            steps[name.decode()] = int(info.split("verified_insns:", 1)[1].split()[0])
    finally:
        bpf.cleanup()
    assert len(steps) == 7 and max(steps.values()) < 20_000, steps


def memory_cgroup_of_this_test(tmp_name: str) -> tuple[Path, str]:
    """A new memory cgroup under this process's own (v2 if it has the memory
    controller, else v1) and the file that sets its limit."""
    own = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        own[controllers] = path
    for mount in Path("/proc/self/mounts").read_text().splitlines():
        _, where, fstype, *_ = mount.split()
        if fstype == "cgroup2" and "memory" in (Path(where) / "cgroup.controllers").read_text().split():
            return Path(where + own[""]) / tmp_name, "memory.max"
    for mount in Path("/proc/self/mounts").read_text().splitlines():
        _, where, fstype, options, *_ = mount.split()
        if fstype == "cgroup" and "memory" in options.split(","):
            controllers = next(c for c in own if "memory" in c.split(","))
            return Path(where + own[controllers]) / tmp_name, "memory.limit_in_bytes"
    pytest.fail("no memory cgroup controller on this host")


def test_oom_kill_in_small_memory_cgroup_is_reported():
    cgroup, limit_file = memory_cgroup_of_this_test(f"spawnwatch-oom-{os.getpid()}")
    cgroup.mkdir()
    try:
        (cgroup / limit_file).write_text(str(32 * 1024 * 1024))
        procs_file = cgroup / "cgroup.procs"
        hog = "b = bytearray(0)\nwhile True: b += bytes(16 << 20)\n"
        with LiveCommand("trace", "--json") as trace:
            proc = subprocess.Popen(
                [sys.executable, "-c", hog],
                preexec_fn=lambda: procs_file.write_text("0"),
                stderr=subprocess.DEVNULL,
            )
            proc.wait(timeout=60)
            trace.wait_for(lambda rs: any(r["kind"] == "oom" and r["pid"] == proc.pid for r in rs), f"the OOM kill of {proc.pid}")
        assert proc.returncode == -9
        (oom,) = [r for r in events_of(trace.records, proc.pid) if r["kind"] == "oom"]
        # The hog is killed growing its buffer past 16 MiB: it holds at least that much.
        assert oom["rss_bytes"] >= 16 * 1024 * 1024
        assert oom["ppid"] == os.getpid()
    finally:
        deadline = time.monotonic() + 10
        while cgroup.exists() and time.monotonic() < deadline:
            try:
                cgroup.rmdir()
            except OSError:
                time.sleep(0.1)


def test_pid_filter_follows_descendants_only():
    marker = uuid.uuid4().hex
    with LiveCommand("trace", "--json", "--pid", str(os.getpid())) as trace:
        ours = subprocess.Popen(["/bin/sh", "-c", f"/bin/true {marker}; /bin/true {marker}"])
        ours.wait()
        trace.wait_for(lambda rs: sum(r["kind"] == "reap" for r in rs) >= 3, "three reaps under this test")
    pids = {r["pid"] for r in trace.records if r["kind"] == "fork"}
    assert ours.pid in pids
    for record in trace.records:
        if record["kind"] == "fork":
            assert record["ppid"] in pids | {os.getpid()}
    assert sum(1 for r in trace.records if r["kind"] == "exec" and marker in r["argv"]) == 2


def test_comm_filter():
    with LiveCommand("trace", "--json", "--comm", "true") as trace:
        subprocess.run(["/bin/true"], check=True)
        trace.wait_for(lambda rs: any(r["kind"] == "exit" for r in rs), "the exit of a `true`")
    events = [r for r in trace.records if r["kind"] not in ("ready", "stats")]
    assert events and all(r["comm"] == "true" for r in events)


def test_human_output_has_header_and_lines():
    proc = subprocess.Popen(
        [sys.executable, "-m", "spawnwatch", "trace", "--duration", "4"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    header = proc.stdout.readline()  # printed once every probe is attached: the marker below is seen
    marker = uuid.uuid4().hex
    subprocess.run(["/bin/true", marker], check=True)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    lines = [header.rstrip("\n"), *out.split("\n")]
    assert lines[0].split()[:3] == ["TIME(s)", "EVENT", "PID"]
    assert all(line.isprintable() for line in lines)
    assert any(line.split()[1] == "exec" and marker in line for line in lines[1:] if line)
    assert "lost 0" in err


def test_layout_offsets_match_the_kernel_structs_field_by_field():
    """bcc compiles bpf/spawnwatch.h with each event struct as a map value; the
    ctypes types it derives from clang's layout must give every field the offset
    and size layout.py decodes it at (a hidden padding field fails too)."""
    from bcc import BPF

    from spawnwatch.probe import layout
    from spawnwatch.probe.preflight import bpf_dir

    structs = tuple(layout.FIELDS)  # every struct the decoder or a sweep reads
    assert {"sw_tally_event", "sw_tally", "sw_birth", "sw_brief_event"} <= set(structs)
    text = (bpf_dir() / "spawnwatch.h").read_text() + "".join(
        f"BPF_ARRAY(layout_{name}, struct {name}, 1);\n" for name in structs
    )
    bpf = BPF(text=text.encode())
    try:
        for name in structs:
            leaf = bpf[f"layout_{name}".encode()].Leaf
            seen = {field: (getattr(leaf, field).offset, getattr(leaf, field).size) for field, _ in leaf._fields_}
            assert seen == layout.FIELDS[name], name
            assert ctypes.sizeof(leaf) == layout.STRUCT_SIZES[name], name
        header = dict(bpf[b"layout_sw_exec_event"].Leaf._fields_)["hdr"]
        assert {f: (getattr(header, f).offset, getattr(header, f).size) for f, _ in header._fields_} == (
            layout.FIELDS["sw_header"]
        )
    finally:
        bpf.cleanup()


def test_doctor_passes_here():
    out = subprocess.run([sys.executable, "-m", "spawnwatch", "doctor"], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "tracing can work here" in out.stdout


def test_argv_in_pages_not_yet_faulted_in_comes_from_proc(tmp_path):
    # execl() with string literals: after fork the child has not touched the
    # .rodata page holding them, so the kernel-side read fails and user space
    # must fill argv from /proc/<pid>/cmdline (the process lives long enough).
    source = tmp_path / "literal.c"
    source.write_text(
        "#include <unistd.h>\n#include <sys/wait.h>\n#include <stdio.h>\n"
        "int main(void) { pid_t pid = fork();\n"
        '  if (pid == 0) { execl("/bin/sleep", "/bin/sleep", "1.5", (char *)0); _exit(127); }\n'
        '  printf("%d\\n", pid); fflush(stdout); waitpid(pid, 0, 0); return 0; }\n'
    )
    binary = tmp_path / "literal"
    subprocess.run(["cc", "-O2", "-o", str(binary), str(source)], check=True)
    with LiveCommand("trace", "--json") as trace:
        child = int(subprocess.run([str(binary)], capture_output=True, text=True, check=True).stdout)
        trace.wait_for(lambda rs: any(r["kind"] == "exec" and r["pid"] == child for r in rs), f"the exec of {child}")
    (exec_,) = [r for r in events_of(trace.records, child) if r["kind"] == "exec"]
    assert exec_["argv"] == ["/bin/sleep", "1.5"]
    assert exec_["argv_truncated"] is False
