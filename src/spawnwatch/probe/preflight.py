"""Can tracing work here?  Each check says what it found and, when it fails, the fix.

`spawnwatch doctor` prints them all; the probe runs the required ones before
loading so a missing piece is one clear line, not a bcc traceback.  Every check
returns a result, also where it may not look (tracefs is root's only): that is a
failed check whose fix is to run as root.
"""

from __future__ import annotations

import functools
import os
import platform
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

TRACEFS_ROOTS = (Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing"))
BPF_MAIN_SOURCE = "spawnwatch.bpf.c"
AS_ROOT = "run as root: sudo spawnwatch ..."
SANDBOXED = ("let spawnwatch read it: in a systemd unit, no ProtectKernelModules= (it hides /lib/modules); "
             "in a container, mount the host's /lib/modules, /usr/src and /sys/kernel/tracing")

# (category, event) of every tracepoint the BPF side attaches to.
TRACEPOINTS = (
    ("task", "task_newtask"),
    ("syscalls", "sys_enter_execve"),
    ("syscalls", "sys_enter_execveat"),
    ("sched", "sched_process_exec"),
    ("sched", "sched_process_exit"),
    ("sched", "sched_process_free"),
    ("oom", "mark_victim"),
)


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = True  # False: informational, tracing works without it

    def problem(self) -> str:
        """The one-line error of a failed check, with its fix."""
        return f"{self.name}: {self.detail}; fix: {self.fix}"


def bpf_dir() -> Path:
    """Where the BPF sources are: $SPAWNWATCH_BPF_DIR, else inside the installed
    package (a wheel ships bpf/ as spawnwatch/bpf), else the source tree's bpf/
    (an editable install runs from the checkout)."""
    override = os.environ.get("SPAWNWATCH_BPF_DIR")
    if override:
        return Path(override)
    package = Path(__file__).resolve().parents[1]
    for candidate in (package / "bpf", package.parents[1] / "bpf"):
        if (candidate / BPF_MAIN_SOURCE).is_file():
            return candidate
    return package / "bpf"


def tracefs() -> Path | None:
    """The tracefs mount with an events directory; PermissionError when one may not be looked into."""
    denied: PermissionError | None = None
    for root in TRACEFS_ROOTS:
        try:
            if (root / "events").is_dir():
                return root
        except PermissionError as exc:
            denied = denied or exc
    if denied is not None:
        raise denied
    return None


def tracepoint_fields(category: str, event: str) -> set[str]:
    """Field names of a tracepoint's format file (empty when absent)."""
    root = tracefs()
    if root is None:
        return set()
    try:
        text = (root / "events" / category / event / "format").read_text()
    except OSError:
        return set()
    fields = set()
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("field:"):
            declaration = line[len("field:") :].split(";", 1)[0]
            fields.add(declaration.split()[-1].split("[", 1)[0])
    return fields


def named(name: str) -> Callable[[Callable[[], Check]], Callable[[], Check]]:
    """A check whose lack of permission is its failed result, never an exception."""

    def decorate(check: Callable[[], Check]) -> Callable[[], Check]:
        @functools.wraps(check)
        def guarded() -> Check:
            try:
                return check()
            except PermissionError as exc:
                where = exc.filename or exc.strerror
                if os.geteuid() != 0:
                    return Check(name, False, f"not allowed to look as uid {os.geteuid()} ({where})", AS_ROOT)
                # Root, and still refused: a sandbox hides it (systemd's Protect*= settings,
                # a container without the host's paths).
                return Check(name, False, f"root may not read {where} here: a sandbox hides it", SANDBOXED)

        return guarded

    return decorate


@named("BPF sources")
def check_bpf_sources() -> Check:
    main = bpf_dir() / BPF_MAIN_SOURCE
    if main.is_file():
        return Check("BPF sources", True, f"{main.parent}")
    return Check(
        "BPF sources",
        False,
        f"{main} is missing",
        "reinstall spawnwatch from its wheel or checkout (bpf/ ships inside the package), "
        "or point SPAWNWATCH_BPF_DIR at a copy of the repository's bpf/",
    )


@named("root")
def check_root() -> Check:
    if os.geteuid() == 0:
        return Check("root", True, "running as root")
    return Check("root", False, f"running as uid {os.geteuid()}", AS_ROOT)


@named("tracefs")
def check_tracefs() -> Check:
    root = tracefs()
    if root:
        return Check("tracefs", True, f"mounted at {root}")
    return Check(
        "tracefs", False, "no tracefs events directory", "mount -t tracefs tracefs /sys/kernel/tracing"
    )


@named("tracepoints")
def check_tracepoints() -> Check:
    missing = [f"{c}:{e}" for c, e in TRACEPOINTS if not tracepoint_fields(c, e)]
    if not missing:
        return Check("tracepoints", True, f"all {len(TRACEPOINTS)} present")
    return Check(
        "tracepoints",
        False,
        "missing " + ", ".join(missing),
        "this kernel lacks them (needs CONFIG_FTRACE_SYSCALLS and tracepoints; Linux >= 5.8)",
    )


@named("bcc")
def check_bcc() -> Check:
    try:
        import bcc  # noqa: F401
    except ImportError as exc:
        return Check(
            "bcc",
            False,
            f"cannot import bcc ({exc})",
            "apt-get install python3-bpfcc, and run with /usr/bin/python3 or a venv made with "
            "--system-site-packages (make setup does both)",
        )
    return Check("bcc", True, f"bcc from {Path(bcc.__file__).parent}")


@named("kernel headers")
def check_headers() -> Check:
    release = platform.release()
    modules = Path("/lib/modules") / release
    for candidate in (modules / "build", modules / "source"):
        if (candidate / "include" / "linux" / "kconfig.h").exists():
            target = candidate.resolve()
            detail = f"{candidate} -> {target}"
            if release not in str(target):
                detail += f" (not {release}'s own: fine, spawnwatch reads no kernel structs)"
            return Check("kernel headers", True, detail)
    if Path("/sys/kernel/kheaders.tar.xz").exists():
        return Check("kernel headers", True, "built into the kernel (/sys/kernel/kheaders.tar.xz)")
    return Check(
        "kernel headers",
        False,
        f"none under {modules}",
        f"apt-get install linux-headers-{release} (or run make setup, which links the "
        "distribution's headers when the exact ones do not exist)",
    )


@named("BPF ring buffer")
def check_ring_buffer() -> Check:
    """Loads a tiny program with a ring buffer: proves BPF, the verifier and ringbuf maps."""
    if os.geteuid() != 0:  # bcc would fail noisily, its compiler's and loader's output on stderr
        return Check("BPF ring buffer", False, "not tried: loading BPF programs needs root", AS_ROOT)
    try:
        from bcc import BPF

        program = BPF(
            text=b"BPF_RINGBUF_OUTPUT(ring, 1);\n"
            b"TRACEPOINT_PROBE(sched, sched_process_exit) { u32 x = 0; "
            b"ring.ringbuf_output(&x, sizeof(x), BPF_RB_NO_WAKEUP); return 0; }"
        )
        program.cleanup()
    except Exception as exc:  # bcc raises bare Exception for every load failure
        return Check(
            "BPF ring buffer",
            False,
            f"could not load a ring-buffer program: {str(exc).splitlines()[0]}",
            "needs Linux >= 5.8 with CONFIG_BPF_SYSCALL, root (or CAP_BPF+CAP_PERFMON), and BPF not "
            "disabled by kernel.unprivileged_bpf_disabled/lockdown",
        )
    return Check("BPF ring buffer", True, "loaded and attached a ring-buffer program")


@named("BTF")
def check_btf() -> Check:
    present = Path("/sys/kernel/btf/vmlinux").exists()
    return Check(
        "BTF",
        present,
        "/sys/kernel/btf/vmlinux present" if present else "no kernel BTF",
        "" if present else "not needed: spawnwatch reads tracepoint fields only",
        required=False,
    )


@named("docker")
def check_docker() -> Check:
    path = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock").removeprefix("unix://")
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(2)
            sock.connect(path)
            sock.sendall(b"GET /_ping HTTP/1.0\r\n\r\n")
            answer = sock.recv(64)
    except OSError as exc:
        return Check(
            "docker",
            False,
            f"no Docker engine at {path} ({exc.strerror or exc})",
            "optional: without it Docker's containers show by cgroup id only (start dockerd for their names); "
            "Podman's, containerd's and CRI-O's are named from their own state, checked below when found",
            required=False,
        )
    ok = b" 200 " in answer
    return Check("docker", ok, f"engine answers at {path}" if ok else f"unexpected answer {answer!r}", required=False)


# Cheap checks the probe runs before every load, in order: the first failure explains all.
REQUIRED: tuple[Callable[[], Check], ...] = (
    check_root,
    check_tracefs,
    check_tracepoints,
    check_bcc,
    check_headers,
    check_bpf_sources,
)
DOCTOR: tuple[Callable[[], Check], ...] = REQUIRED + (check_ring_buffer, check_btf, check_docker)


def first_failure() -> Check | None:
    for check in REQUIRED:
        result = check()
        if not result.ok:
            return result
    return None
