"""What `reap` did or would do: one record (the --json object) and its human view.

Everything in the human view may come from a hostile local user (argv, comm, container
names, engine answers): every line is built with `spawnwatch.text`, so the list an
operator reviews before --yes shows escapes instead of obeying them."""

from __future__ import annotations

from typing import Any

from spawnwatch.adapters.engine import SHORT_ID, ContainerInfo
from spawnwatch.adapters.ledger import LedgerFile
from spawnwatch.reap.collect import ContainerState
from spawnwatch.reap.execute import ContainerOutcome, Outcome
from spawnwatch.reap.plan import AMBIGUOUS, ContainerLeak, Plan, processes_only
from spawnwatch.text import command_line, container_line, human_bytes, printable

COMMAND_WIDTH = 100


def _head(signature: str, dry_run: bool, refused: str | None) -> dict[str, Any]:
    """What a reap record opens with, of processes and of containers alike."""
    return {"kind": "reap", "dry_run": dry_run, "refused": refused, "signature": signature}


def plan_record(chosen: Plan, rss: dict[int, int], container: ContainerInfo | None, dry_run: bool,
                refused: str | None) -> dict[str, Any]:
    spawner = chosen.spawner
    return {
        **_head(chosen.signature, dry_run, refused),
        "spawner": {"pid": spawner.pid, "ppid": spawner.ppid, "argv": list(spawner.argv), "comm": spawner.comm}
        if spawner
        else None,
        "container": container.as_contract() if container else None,
        "processes_only": processes_only(container),  # why the container itself is left, when it is
        "kept": [p.pid for p in chosen.kept],
        "targets": [
            {
                "pid": t.process.pid,
                "member": t.member,
                "argv": list(t.process.argv),
                "comm": t.process.comm,
                "rss_bytes": rss.get(t.process.pid, 0),
            }
            for t in chosen.targets
        ],
        "rss_bytes": sum(rss.values()),
    }


def outcome_record(outcome: Outcome) -> dict[str, Any]:
    return {
        "ended": [p.pid for p in outcome.ended],
        "killed": [p.pid for p in outcome.killed],
        "survived": [p.pid for p in outcome.survived],
        "gone": [p.pid for p in outcome.gone],
        "zombies": [p.pid for p in outcome.zombies],
        "spared": [p.pid for p in outcome.spared],
        "rss_freed_bytes": outcome.rss_freed,
    }


def containers_record(kept: LedgerFile, leak: ContainerLeak, states: list[ContainerState], now: float,
                      dry_run: bool, refused: str | None) -> dict[str, Any]:
    spawner = leak.spawner
    return {
        **_head(leak.signature, dry_run, refused),
        "spawner": {key: spawner.get(key) for key in ("pid", "ppid", "argv", "comm")},
        "container": leak.container,
        "ledger": {"path": kept.path, "writer_pid": kept.writer.pid, "stale": kept.stale},
        "containers": [
            {
                "id": state.listed.id,
                "name": state.info.name if state.info else state.listed.name,  # the engine's word, while it has one
                "image": state.info.image if state.info else state.listed.image,
                "running": state.running,
                "age_s": state.age_s(now),
                "memory_bytes": state.memory_bytes,
                "left_out": AMBIGUOUS if state.listed.ambiguous else None,
                "unknown": state.unknown,
            }
            for state in states
        ],
        "memory_bytes": sum(state.memory_bytes or 0 for state in states if not state.listed.ambiguous),
    }


def containers_outcome_record(outcome: ContainerOutcome) -> dict[str, Any]:
    return {
        "ended": [c.id for c in outcome.ended],
        "gone": [c.id for c in outcome.gone],
        **{name: [{"id": c.id, "reason": why} for c, why in getattr(outcome, name)]
           for name in ("skipped", "failed", "unremoved")},
        "memory_freed_bytes": outcome.memory_freed,
    }


def render(record: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The human view of a record: lines for stdout, and lines for stderr (what failed)."""
    return _containers(record) if "containers" in record else _processes(record)


def _processes(record: dict[str, Any]) -> tuple[list[str], list[str]]:
    spawner = record["spawner"]
    by = f"{printable(spawner['comm'])} (pid {spawner['pid']})" if spawner else "an unknown spawner"
    where = f" in container {printable(record['container']['name'])}" if record["container"] else ""
    members = sum(1 for t in record["targets"] if t["member"] == t["pid"])
    out = [
        f"group `{printable(record['signature'])}` of {by}{where}: ending {members} members "
        f"and {len(record['targets']) - members} descendants, keeping {len(record['kept'])}"
        + (f" (pids {', '.join(map(str, record['kept']))})" if record["kept"] else ""),
        f"{'PID':>8} {'MEMBER':>8} {'RSS':>10}  COMMAND",
    ]
    for t in record["targets"]:
        command = command_line(t["argv"], t["comm"], COMMAND_WIDTH)
        out.append(f"{t['pid']:>8} {t['member']:>8} {human_bytes(t['rss_bytes']):>10}  {command}")
    if record["processes_only"]:
        out.append(f"note: {record['processes_only']}")
    if record["refused"]:
        return [*out, f"refused: {record['refused']}; nothing ended"], []
    if record["dry_run"]:
        return [*out, f"would free about {human_bytes(record['rss_bytes'])} RSS; nothing ended: add --yes to end them"], []
    out.append(f"ended {len(record['ended'])} ({len(record['killed'])} needed SIGKILL), "
               f"freed {human_bytes(record['rss_freed_bytes'])} RSS")
    if record["gone"]:
        out.append(f"already gone before the end: {', '.join(map(str, record['gone']))}")
    if record["zombies"]:
        out.append(f"zombies, dead already (only their parent can reap them): {', '.join(map(str, record['zombies']))}")
    if record["spared"]:
        out.append(f"left alone, this command runs in them: {', '.join(map(str, record['spared']))}")
    err = [f"still alive after SIGKILL: {', '.join(map(str, record['survived']))}"] if record["survived"] else []
    return out, err


def _containers(record: dict[str, Any]) -> tuple[list[str], list[str]]:
    spawner = record["spawner"]
    running = [c for c in record["containers"] if c["running"] and not c["left_out"]]
    out = [
        f"containers left by `{printable(record['signature'])}` clients of {printable(spawner['comm'] or '')}"
        f" (pid {spawner['pid']}): ending {len(running)} of the {_count(len(record['containers']))} the ledger lists"
        f" ({printable(record['ledger']['path'])}, of `watch` pid {record['ledger']['writer_pid']})",
        f"{'CONTAINER':<12}  {'NAME':<28} {'IMAGE':<32} {'AGE':>5} {'MEMORY':>10}",
    ]
    for c in record["containers"]:
        state = (f"  ({c['left_out']})" if c["left_out"] else f"  (unknown: {printable(c['unknown'])})" if c["unknown"]
                 else "" if c["running"] else "  (not running)")
        out.append(container_line(c) + state)
    unknown = [c for c in record["containers"] if c["unknown"]]
    err = [f"cannot say which of them run: {printable(unknown[0]['unknown'])}"] if unknown else []
    if record["refused"]:
        return [*out, f"refused: {record['refused']}; nothing ended"], err
    if record["dry_run"]:
        return [*out, f"would free about {human_bytes(record['memory_bytes'])}; nothing ended: add --yes to end them"], err
    out.append(f"ended {_count(len(record['ended']))}, freed {human_bytes(record['memory_freed_bytes'])}")
    if record["gone"]:
        out.append(f"already stopped or removed: {', '.join(printable(i[:SHORT_ID]) for i in record['gone'])}")
    for name, what in (("skipped", "left alone"), ("unremoved", "killed, not removed")):
        out.extend(f"{what}: {printable(c['id'][:SHORT_ID])}: {printable(c['reason'])}" for c in record[name])
    err = [f"not ended: {printable(c['id'][:SHORT_ID])}: {printable(c['reason'])}" for c in record["failed"]]
    return out, err


def _count(n: int) -> str:
    return f"{n} container{'s' if n != 1 else ''}"
