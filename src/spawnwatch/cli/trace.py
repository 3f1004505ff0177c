"""`spawnwatch trace`: the raw event stream."""

from __future__ import annotations

import click

from spawnwatch.cli.common import (
    CannotTrace, config_option, duration_option, json_option, load_config, one_line_errors, ring_buffer_option,
    show_secrets_option,
)
from spawnwatch.adapters import procfs
from spawnwatch.consumers.trace import EventStream
from spawnwatch.filters import CommFilter, SubtreeFilter
from spawnwatch.probe import ProbeError
from spawnwatch.recording import RecordingError
from spawnwatch.runner import run_live


@click.command("trace")
@duration_option
@click.option("--pid", type=click.IntRange(min=1), help="Only this process and its descendants.")
@click.option("--comm", help="Only events whose command name (comm) is this.")
@click.option("--container", metavar="NAME", help="Only events from this container (name or id prefix).")
@click.option("--record", type=click.Path(dir_okay=False, writable=True), help="Also save every event to FILE (msgpack, mode 0600) for `watch --replay`; never through a symlink, and an "
              "existing FILE must be a regular file of this user.")
@config_option
@show_secrets_option
@ring_buffer_option
@json_option
@one_line_errors
def command(
    duration: float | None, pid: int | None, comm: str | None, container: str | None, record: str | None,
    config_path: str | None, show_secrets: bool, ring_buffer_kb: int | None, as_json: bool,
) -> None:
    """Stream process events from the kernel: fork, exec, exit, reap, oom.

    \b
    fork  a new process (threads are not shown); PPID is its parent
    exec  the process ran a new program; DETAIL is its argv
    exit  the process died; until its reap it is a zombie
    reap  its parent (or init) collected it; DETAIL says how long it was a zombie
    oom   the OOM killer chose it as victim

    CONTAINER is the Docker (or containerd, podman, Kubernetes) container the
    process runs in, "-" on the host; in --json, "container" is {"id", "name",
    "image", "runtime"} (a pod's also "pod", "namespace", "pod_uid") or null.  With --json the first line is {"kind": "ready", "pid": ...}
    once every probe is attached, then one object per event, then
    {"kind": "stats", ...} last.  Secrets in argv (API keys, tokens, passwords)
    show as <redacted>, in the output and in the recording.

    \b
    Examples:
      sudo spawnwatch trace
      sudo spawnwatch trace --json --duration 10 > events.jsonl
      sudo spawnwatch trace --pid 4242          # a supervisor and all it spawns
      sudo spawnwatch trace --comm npm --json
      sudo spawnwatch trace --container metamcp
    """
    config = load_config(config_path, show_secrets)
    filters = []
    if pid is not None:
        filters.append(SubtreeFilter(pid, procfs.descendants(pid)))
    if comm is not None:
        filters.append(CommFilter(comm))
    try:
        run_live(config, EventStream(filters, container, as_json), duration, record, ring_buffer_kb)
    except ProbeError as exc:
        raise CannotTrace(str(exc)) from exc
    except RecordingError as exc:
        raise click.BadParameter(str(exc), param_hint="--record") from exc
