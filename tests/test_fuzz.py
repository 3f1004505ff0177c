"""Malformed input, generated: more than 10,000 recordings, config files and ring-buffer
records end in a clear error or a decoded result, never a traceback.

- recordings (msgpack and JSON lines: wrong types, missing keys, records that are not
  maps, truncated streams, random bytes) through `watch --replay`: exit 0, or exit 1
  with one `Error: ...` line;
- config files (any TOML, the default's keys given junk values) through `config.load`:
  a ConfigError, or a config the pipeline runs with;
- ring-buffer records (random bytes, and headers of every kind with random sizes and
  bodies) through `layout.decode`: a DecodeError or a decoded event.
"""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import msgpack
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from spawnwatch.cli import main
from spawnwatch.config import ConfigError, default_text, load
from spawnwatch.events import (EVENT_TYPES, OBSERVATION_TYPES, Event, Exec, Fork, ProcessInfo, Snapshot,
                               from_record, replaced, to_record)
from spawnwatch.pipeline import Pipeline
from spawnwatch.probe import layout

pytestmark = pytest.mark.slow

RECORDINGS = 4000
CONFIGS = 3000
RING_RECORDS = 4000
FUZZ = dict(deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def scratch():
    with tempfile.TemporaryDirectory(prefix="spawnwatch-fuzz-") as directory:
        yield Path(directory)


# --- recordings -----------------------------------------------------------------------------

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
                      max_leaves=8)

PROCESS = {"pid": 2, "ppid": 1, "start": 0.5, "comm": "sh", "argv": ["sh", "-c", "x"], "cgroup_id": 1, "zombie": False,
           "cgroup_path": "/"}
TEMPLATES = [
    {"kind": "snapshot", "ts": 1.0, "processes": [{**PROCESS, "pid": 1, "ppid": 0}, PROCESS]},
    {"kind": "fork", "ts": 1.1, "pid": 3, "ppid": 2, "comm": "sh", "cgroup_id": 1},
    {"kind": "exec", "ts": 1.2, "pid": 3, "ppid": 2, "comm": "node", "cgroup_id": 1, "argv": ["node", "a.js"],
     "filename": "/usr/bin/node", "argv_truncated": False},
    {"kind": "exit", "ts": 1.3, "pid": 3, "ppid": 2, "comm": "node", "cgroup_id": 1},
    {"kind": "reap", "ts": 1.4, "pid": 3, "ppid": 2, "comm": "node", "cgroup_id": 1},
    {"kind": "oom", "ts": 1.5, "pid": 3, "ppid": 2, "comm": "node", "cgroup_id": 1, "rss_bytes": 4096},
    {"kind": "pids", "ts": 1.6, "cgroup_id": 1, "current": 52, "limit": 64, "refused": 0, "path": "/docker/x"},
    {"kind": "pids", "ts": 1.7, "cgroup_id": 1, "current": 3, "limit": None, "refused": 0, "path": "/"},
    {"kind": "container", "ts": 1.8, "action": "start", "id": "ab" * 32, "name": "gh-1", "image": "mcp/gh:1",
     "compose_project": "", "exit_code": 0, "detached": False},
    {"kind": "tick", "ts": 2.0},
    {"kind": "stats", "events": {}, "lost": 0},
    {"kind": "ready", "pid": 1},
]


@st.composite
def mutated(draw) -> object:
    """A valid record with one value replaced, one key dropped, or a process spoiled."""
    record = dict(draw(st.sampled_from(TEMPLATES)))
    key = draw(st.sampled_from(sorted(record)))
    how = draw(st.sampled_from(["replace", "drop", "process"]))
    if how == "drop":
        del record[key]
    elif how == "process" and record["kind"] == "snapshot":
        process = dict(PROCESS)
        process[draw(st.sampled_from(sorted(process)))] = draw(values)
        record["processes"] = [process]
    else:
        record[key] = draw(values)
    return record


records = st.lists(st.one_of(st.sampled_from(TEMPLATES), mutated(), values), max_size=6)


@st.composite
def recording(draw) -> bytes:
    items = draw(records)
    form = draw(st.sampled_from(["msgpack", "jsonl", "truncated", "bytes"]))
    if form == "bytes":
        return draw(st.binary(max_size=64))
    if form == "jsonl":
        return "".join(json.dumps(item) + "\n" for item in items).encode()
    packed = b"".join(msgpack.packb(item) for item in items)
    if form == "truncated" and packed:
        return packed[: draw(st.integers(0, len(packed) - 1))]
    return packed


def assert_clean_end(result) -> None:
    """Exit 0, or exit 1 with one `Error:` line: never an exception escaping."""
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code in (0, 1), result.output
    if result.exit_code == 1:
        assert result.output.count("\n") >= 1 and result.output.splitlines()[-1].startswith("Error: ")


@settings(max_examples=RECORDINGS, **FUZZ)
@given(data=recording())
def test_malformed_recordings_replay_or_fail_in_one_line(scratch, data) -> None:
    path = scratch / "recording"
    path.write_bytes(data)
    result = CliRunner().invoke(main, ["watch", "--replay", str(path), "--json"])
    assert_clean_end(result)
    event(f"exit {result.exit_code}")


@pytest.mark.parametrize("content", [
    msgpack.packb({"kind": "fork", "ts": 1.0, "pid": "7", "ppid": 1, "comm": "sh", "cgroup_id": 0}),
    msgpack.packb({"kind": "exec", "ts": 1.0, "pid": 7, "ppid": 1, "comm": "sh"}),
    b'{"kind": "snapshot", "ts": 1.0, "processes": [{"pid": 1}]}\n',
    b'[1, 2]\n',
    msgpack.packb({"kind": "fork", "ts": 1.0, "pid": 7, "ppid": 1, "comm": "sh", "cgroup_id": 0})[:-3],
], ids=["wrong-type", "missing-key", "bad-process", "not-a-map", "truncated"])
def test_a_bad_recording_is_one_line_from_the_real_cli(tmp_path, content) -> None:
    path = tmp_path / "bad-file"
    path.write_bytes(content)
    result = subprocess.run([sys.executable, "-m", "spawnwatch", "watch", "--replay", str(path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and result.stderr.startswith(f"Error: {path}"), result.stderr


# --- config files ---------------------------------------------------------------------------

def toml_value(value: object) -> str:
    """`value` as an inline TOML value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, (int, float, str)):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(value)


def paths(table: dict, prefix: tuple = ()) -> list[tuple]:
    found = []
    for key, value in table.items():
        found.append(prefix + (key,))
        if isinstance(value, dict):
            found += paths(value, prefix + (key,))
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            found += [prefix + (key, 0) + rest for rest in paths(value[0])]
    return found


DEFAULT = tomllib.loads(default_text())
PATHS = paths(DEFAULT)
toml_values = st.recursive(
    st.one_of(st.booleans(), st.integers(-1, 2), st.integers(min_value=-(2**63), max_value=2**63 - 1), st.floats(),
              st.text(max_size=8)),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)


def nest(path: tuple, value: object) -> dict:
    """The override table that sets `path` (an index means: an array of that one table)."""
    for key in reversed(path):
        value = [value] if isinstance(key, int) else {key: value}
    return value


def default_at(path: tuple) -> object:
    value: object = DEFAULT
    for key in path:
        value = value[key]
    return value


def plausible(default: object) -> st.SearchStrategy:
    """Values of the default's own type, edge cases first: they get past the type checks."""
    if isinstance(default, bool):
        return st.booleans()
    if isinstance(default, int):
        return st.integers(-1, 3) | st.integers(0, 2**63 - 1)
    if isinstance(default, float):
        return st.sampled_from([0.0, 1e-9, 1e300, math.inf, math.nan]) | st.floats(-1, 1e6)
    if isinstance(default, str):
        return st.sampled_from(["", "(", "\\1", "[", ".*"]) | st.text(max_size=8)
    if isinstance(default, list):
        return st.lists(st.text(max_size=6), max_size=3)
    return toml_values


@st.composite
def config_text(draw) -> str:
    if draw(st.integers(0, 9)) == 0:
        return draw(st.text(max_size=40))  # mostly not TOML at all
    override: dict = {}
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(PATHS))
        if draw(st.booleans()):
            value = draw(plausible(default_at(path)))
        else:
            path += tuple(draw(st.lists(st.text(max_size=4), max_size=1)))
            value = draw(toml_values)
        override.update(nest(path, value))
    return "".join(f"{json.dumps(key)} = {toml_value(value)}\n" for key, value in override.items())


SMALL_SNAPSHOT = Snapshot(5.0, (ProcessInfo(1, 0, 0.1, "init", ("/sbin/init",)),
                                *(ProcessInfo(10 + i, 1, 1.0 + i, "node", ("node", "a.js")) for i in range(3))))


@settings(max_examples=CONFIGS, **FUZZ)
@given(text=config_text())
def test_any_config_file_is_a_config_error_or_a_working_config(scratch, text) -> None:
    path = scratch / "config.toml"
    path.write_text(text, errors="surrogateescape")
    try:
        config = load(path)
    except ConfigError as exc:
        assert str(exc).startswith(str(path)) and "\n" not in str(exc)
        event("a ConfigError")
        return
    event("a config the pipeline runs with")
    pipeline = Pipeline(config)
    pipeline.feed(SMALL_SNAPSHOT)
    pipeline.feed(Fork(6.0, 20, 10, "node", 0))
    pipeline.feed(Exec(6.1, 20, 10, "npx", 0, ("npx", "-y", "@scope/pkg@1.0", "--token", "x")))
    pipeline.evaluate(7.0)


# --- ring-buffer records --------------------------------------------------------------------

@st.composite
def ring_record(draw) -> bytes:
    if draw(st.booleans()):
        return draw(st.binary(max_size=layout.STRUCT_SIZES["sw_exec_event"] + 8))
    body = draw(st.binary(max_size=layout.STRUCT_SIZES["sw_exec_event"]))
    type_ = draw(st.integers(0, 8))
    header = layout.HEADER.pack(type_, 0, 7, 10**9, 1, 1, 0, b"sh")
    raw = header + body
    size = draw(st.sampled_from([len(raw), layout.HEADER.size, draw(st.integers(0, 2**16 - 1))]))
    return layout.HEADER.pack(type_, size, 7, 10**9, 1, 1, 0, b"sh") + body


@settings(max_examples=RING_RECORDS, **FUZZ)
@given(raw=ring_record())
def test_any_ring_buffer_record_decodes_or_is_a_decode_error(raw) -> None:
    try:
        decoded = layout.decode(raw)
    except layout.DecodeError:
        return
    assert isinstance(decoded[0], Event)  # (event, flags, ...)


FIELD_VALUES = {
    "float": st.floats(min_value=0, max_value=1e9, allow_nan=False),
    "int": st.integers(min_value=0, max_value=2**64 - 1),
    "int | None": st.none() | st.integers(min_value=0, max_value=2**64 - 1),
    "str": st.text(max_size=20),
    "bool": st.booleans(),
    "tuple[str, ...]": st.lists(st.text(max_size=10), max_size=4).map(tuple),
}


def any_item(cls: type) -> st.SearchStrategy:
    return st.builds(cls, **{f.name: FIELD_VALUES[f.type] for f in dataclasses.fields(cls)})


@settings(max_examples=500, **FUZZ)
@given(item=st.one_of(*(any_item(cls) for cls in (*EVENT_TYPES.values(), *OBSERVATION_TYPES.values()))))
def test_every_event_and_observation_comes_back_from_its_record_as_it_was(item) -> None:
    back = from_record(to_record(item))
    assert back == item and type(back) is type(item)


@settings(max_examples=300, **FUZZ)
@given(data=st.data(), cls=st.sampled_from((*EVENT_TYPES.values(), *OBSERVATION_TYPES.values())))
def test_an_item_with_fields_changed_is_what_dataclasses_replace_makes(data, cls) -> None:
    # The probe completes every record with events.replaced, compiled per class.
    item = data.draw(any_item(cls))
    names = data.draw(st.sets(st.sampled_from([f.name for f in dataclasses.fields(cls)])))
    changes = {f.name: data.draw(FIELD_VALUES[f.type]) for f in dataclasses.fields(cls) if f.name in names}
    changed = replaced(item, **changes)
    assert changed == dataclasses.replace(item, **changes) and type(changed) is cls
