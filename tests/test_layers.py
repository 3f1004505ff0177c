"""The data path is the layout: imports point down, and the pure layers touch no I/O.

    probe -> events -> lineage -> detect -> alerts -> sinks, cli on top
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "spawnwatch"

# Modules that must run without root on recorded events: no kernel, /proc,
# Docker, network, terminal or subprocess access.
PURE = ("clock", "events", "records", "bounded", "redact", "signature", "lineage", "detect", "alerts", "tree", "pipeline", "config", "filters", "event_lines", "text", "top")
IO_MODULES = {"bcc", "psutil", "docker", "click", "socket", "subprocess", "http", "urllib", "requests",
              "prometheus_client", "msgpack", "threading", "ctypes"}
# Our layers that the pure ones may never reach up or out to.
EDGES = ("spawnwatch.cli", "spawnwatch.adapters", "spawnwatch.probe", "spawnwatch.sinks", "spawnwatch.runner", "spawnwatch.consumers",
         "spawnwatch.recording", "spawnwatch.simulate", "spawnwatch.reap", "spawnwatch.report")


def imports_of(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def module_path(name: str) -> Path | None:
    for candidate in (PACKAGE / f"{name}.py", PACKAGE / name / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def all_files_of(name: str) -> list[Path]:
    path = module_path(name)
    if path is None:
        return []
    return sorted(path.parent.rglob("*.py")) if path.name == "__init__.py" else [path]


@pytest.mark.parametrize("name", PURE)
def test_pure_layers_do_no_io(name):
    for path in all_files_of(name):
        imported = imports_of(path)
        io = {i for i in imported if i.split(".")[0] in IO_MODULES}
        assert not io, f"{path.name} imports {io}"
        upward = {i for i in imported if i.startswith(EDGES)}
        assert not upward, f"{path.name} reaches out to {upward}"


def test_events_import_nothing_of_ours():
    assert not {i for i in imports_of(PACKAGE / "events.py") if i.startswith("spawnwatch")}


def test_only_the_cli_and_the_terminal_sink_use_click():
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE)
        if relative.parts[0] == "cli" or relative == Path("sinks/human.py"):
            continue
        assert "click" not in {i.split(".")[0] for i in imports_of(path)}, path


def test_nothing_below_the_cli_imports_it():
    for path in PACKAGE.rglob("*.py"):
        if "cli" in path.relative_to(PACKAGE).parts or path.name == "__main__.py":
            continue
        assert not {i for i in imports_of(path) if i.startswith("spawnwatch.cli")}, path


def test_psutil_and_docker_stay_in_adapters():
    # simulate.py is not on the data path: it is the workload that reproduces the leak.
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).parts
        if parts[0] in ("adapters", "cli", "simulate.py"):
            continue
        found = {i.split(".")[0] for i in imports_of(path)} & {"psutil", "docker"}
        assert not found, f"{path.relative_to(PACKAGE)} imports {found}: put it in an adapter"


def test_the_cli_replays_through_the_one_replay():
    # cli/ parses, calls and renders: reading a recording into the pipeline is consumers/replay.py's alone.
    replay_internals = {"spawnwatch.recording.read_records", "spawnwatch.events.from_record",
                        "spawnwatch.consumers.watch.TICK"}
    for path in [*(PACKAGE / "cli").rglob("*.py"), PACKAGE / "consumers" / "top.py"]:
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                imported.update(f"{node.module}.{alias.name}" for alias in node.names)
        assert not imported & replay_internals, f"{path.relative_to(PACKAGE)} replays by hand: use consumers.replay"


def test_one_live_loop():
    # Every live command is a consumer of runner.run_live: a loop of its own would skip what watch feeds.
    for path in PACKAGE.rglob("*.py"):
        if path.relative_to(PACKAGE).parts[0] in ("runner.py", "probe"):
            continue
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "spawnwatch.runner":
                imported.update(alias.name for alias in node.names)
        assert not imported & {"live_batches", "open_probe", "Stop"}, f"{path.relative_to(PACKAGE)} drives the probe by hand"


def test_one_judge_of_proc():
    # tree, report and reap judge a snapshot with pipeline.judge: a Pipeline of their own would read the verdict
    # its own way (one once forgot the reparent hint). Only the live and the replayed stream build one.
    builders = {path.relative_to(PACKAGE).as_posix() for path in PACKAGE.rglob("*.py") if "Pipeline(" in path.read_text()}
    assert builders == {"pipeline.py", "consumers/watch.py", "consumers/replay.py"}
    for path in PACKAGE.rglob("*.py"):
        assert "REAPABLE = " not in path.read_text() or path == PACKAGE / "detect" / "rules" / "__init__.py", path


RECORD_KINDS = {"ready", "alert", "tick", "progress", "stats"}


def test_record_kinds_are_declared_once():
    # A kind spelled out at each use is a place where a rename lands in one copy only: records.py names them.
    for path in PACKAGE.rglob("*.py"):
        if path == PACKAGE / "records.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare) or (isinstance(node, ast.Dict) and any(
                    isinstance(k, ast.Constant) and k.value == "kind" for k in node.keys)):
                literals = {n.value for n in ast.walk(node) if isinstance(n, ast.Constant)} & RECORD_KINDS
                assert not literals, f"{path.relative_to(PACKAGE)}:{node.lineno} spells the record kind {literals}"


def test_tables_are_bounded_by_the_one_bounded_map():
    # Evictions by hand are silent: bounded.BoundedMap counts each, per table, in stats and metrics.
    by_hand = {path.relative_to(PACKAGE).as_posix() for path in PACKAGE.rglob("*.py")
               if "popitem(last=False)" in path.read_text()}
    assert by_hand == {"bounded.py"}
