"""Thresholds and signature rules: data/default-config.toml, overridden by `--config FILE`.

A user file only names what it changes: its tables merge into the defaults key
by key, its lists replace the default list.  Unknown keys, wrong types, numbers
out of their key's range (RANGES: every number has one) and bad regexes are
errors that name the file, the key and what it accepts.
"""

from __future__ import annotations

import functools
import re
import sys
import typing
from dataclasses import MISSING, dataclass, fields, is_dataclass
from importlib import resources
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # the same parser, from PyPI
    import tomli as tomllib

from spawnwatch.alerts import AlertPolicy
from spawnwatch.detect import RULES, DetectSettings
from spawnwatch.lineage import LineageSettings
from spawnwatch.redact import RedactRules, Redactor, program_options, segments
from spawnwatch.signature import Interpreter, Launcher, Mask, SignatureRules
from spawnwatch.text import cut

DEFAULT_CONFIG = "data/default-config.toml"
HOUR = 3600.0
DAY = 24 * HOUR
MANY = 1_000_000  # a count threshold past this never fires on a real host
# What each number accepts, bounds included.  Counts that would fire on any spawner
# start above 1, intervals that would make a busy loop start above 0, and nothing
# goes past what a host can hold, so a typo cannot blind or flood the watcher.
RANGES: dict[str, tuple[float, float]] = {
    "lineage.max_processes": (1024, 4_194_304),  # pid_max's ceiling
    "lineage.retention_s": (0, DAY),
    "detect.evaluate_every_s": (0.05, HOUR),
    "detect.max_idle_groups": (0, MANY),
    "detect.idle_group_s": (0, 7 * DAY),
    "detect.memory_every_s": (0.1, HOUR),
    "rules.accumulating.min_live": (2, MANY),
    "rules.accumulating.min_gap_s": (0, HOUR),
    "rules.accumulating.min_growth": (1, MANY),
    "rules.accumulating.critical_live": (2, MANY),
    "rules.orphaned.min_orphans": (1, MANY),
    "rules.orphaned.min_leakers": (1, MANY),
    "rules.orphaned.handoff_s": (0, 60),
    "rules.orphaned.min_zombie_age_s": (0, DAY),
    "rules.orphaned.critical_orphans": (1, MANY),
    "rules.orphaned_containers.min_containers": (1, MANY),
    "rules.orphaned_containers.grace_s": (0, HOUR),
    "rules.orphaned_containers.match_window_s": (1, HOUR),
    "rules.orphaned_containers.critical_containers": (1, MANY),
    "rules.zombie.min_zombies": (1, MANY),
    "rules.zombie.min_age_s": (0, DAY),
    "rules.zombie.critical_zombies": (1, MANY),
    "rules.spawn_rate.per_minute": (1, 100 * MANY),
    "rules.spawn_rate.minutes": (1, 60),  # a group keeps a count per minute of this window
    "rules.spawn_rate.critical_per_minute": (1, 100 * MANY),
    "rules.oom.hold_s": (0, 7 * DAY),
    "rules.oom.critical_kills": (1, MANY),
    "rules.pids.share": (0.01, 1),  # of the limit
    "rules.pids.min_members": (1, MANY),
    "rules.pids.hold_s": (0, 7 * DAY),
    "rules.pids.sample_every_s": (0.1, HOUR),
    "rules.pids.unlimited_every_s": (0.1, DAY),
    "alerts.update_every_s": (1, DAY),
    "alerts.resolve_after_s": (0, DAY),
    "alerts.max_pids": (0, 1000),
    "signature.max_args": (0, 64),
    # Shorter, and signatures cut that short merge groups a launcher and a package tell apart.
    "signature.max_length": (64, 4096),
}


class ConfigError(ValueError):
    """A config file that cannot be used; the message names the file and the key."""


@dataclass(frozen=True, slots=True)
class WatchSettings:
    state_dir: str = "/var/lib/spawnwatch"  # "" keeps no ledger and no state


@dataclass(frozen=True, slots=True)
class RuntimeSettings:
    host_root: str = "/"  # where the host's root is mounted (a DaemonSet's pod mounts it elsewhere)
    containerd_state: str = "/run/containerd"  # containerd's --state directory, on that host


@dataclass(frozen=True, slots=True)
class Config:
    lineage: LineageSettings
    detect: DetectSettings
    alerts: AlertPolicy
    signature: SignatureRules
    redact: RedactRules
    watch: WatchSettings
    runtimes: RuntimeSettings


def default_text() -> str:
    return resources.files("spawnwatch").joinpath(DEFAULT_CONFIG).read_text()


def load(path: str | Path | None = None) -> Config:
    if path is None:
        return _default()
    source = str(path)
    try:
        with open(path, "rb") as f:
            user = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    except ValueError as exc:  # also an integer too long to read (Python's 4300 digits)
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    return _build(_merge(tomllib.loads(default_text()), user, source, ""), source)


@functools.cache
def _default() -> Config:
    """Parsed once: a Config is frozen, and its parse is most of a short command's start-up."""
    return _build(tomllib.loads(default_text()), "default config")


@functools.cache
def default_redactor() -> Redactor:
    """The default config's [redact] rules, for readers of argv that were handed none."""
    return Redactor(load().redact)


def _merge(base: dict[str, Any], override: dict[str, Any], source: str, where: str) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        name = f"{where}{key}"
        if key not in base:
            known = ", ".join(sorted(base))
            raise ConfigError(f"{source}: unknown key {_shown(name)} (known here: {known})")  # repr: one line
        if isinstance(base[key], dict):
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: '{name}' must be a table")
            merged[key] = _merge(base[key], value, source, f"{name}.")
        else:
            merged[key] = value
    return merged


def _build(data: dict[str, Any], source: str) -> Config:
    rules = data["rules"]
    detect = _make(DetectSettings, {
        **data["detect"],
        **{name: _make(rule.settings, rules[name], source, f"rules.{name}") for name, rule in RULES.items()},
    }, source, "detect")
    for pattern in detect.ignore_signatures:
        _regex(pattern, source, "detect.ignore_signatures")
    signature = data["signature"]
    interpreters = tuple(
        _make(Interpreter, table, source, f"signature.interpreters[{i}]")
        for i, table in enumerate(_tables(signature, "interpreters", source))
    )
    launchers = tuple(
        _make(Launcher, table, source, f"signature.launchers[{i}]")
        for i, table in enumerate(_tables(signature, "launchers", source))
    )
    masks = tuple(
        _make(Mask, table, source, f"signature.masks[{i}]")
        for i, table in enumerate(_tables(signature, "masks", source))
    )
    for i, launcher in enumerate(launchers):
        if launcher.version:
            _regex(launcher.version, source, f"signature.launchers[{i}].version")
        if not launcher.commands or not all(launcher.commands):
            raise ConfigError(f"{source}: 'signature.launchers[{i}].commands' must list non-empty word lists")
    for i, mask in enumerate(masks):
        compiled = _regex(mask.pattern, source, f"signature.masks[{i}].pattern")
        try:
            compiled.sub(mask.replacement, "")
            compiled.sub(mask.replacement, "/tmp/x 1 ab12cd34ef")
        except (re.error, IndexError) as exc:
            raise ConfigError(f"{source}: 'signature.masks[{i}].replacement': {exc}") from exc
    flat = {k: v for k, v in signature.items() if k not in ("interpreters", "launchers", "masks")}
    rules_ = _make(SignatureRules, {**flat, "interpreters": interpreters, "launchers": launchers, "masks": masks},
                   source, "signature")
    config = Config(
        lineage=_make(LineageSettings, data["lineage"], source, "lineage"),
        detect=detect,
        alerts=_make(AlertPolicy, data["alerts"], source, "alerts"),
        signature=rules_,
        redact=_redact_rules(data["redact"], source),
        watch=_make(WatchSettings, data["watch"], source, "watch"),
        runtimes=_make(RuntimeSettings, data["runtimes"], source, "runtimes"),
    )
    return config


def _redact_rules(table: dict[str, Any], source: str) -> RedactRules:
    rules = _make(RedactRules, table, source, "redact")
    for i, key in enumerate(rules.keys):
        if not segments(key):
            raise ConfigError(f"{source}: 'redact.keys[{i}]' must be a name such as api_key, not {key!r}")
    for field_name in ("contains", "headers"):
        for i, name in enumerate(getattr(rules, field_name)):
            if not segments(name):
                raise ConfigError(f"{source}: 'redact.{field_name}[{i}]' must be a name such as password, not {name!r}")
    try:
        program_options(rules.options)
    except ValueError as error:
        raise ConfigError(f"{source}: 'redact.options': {error}") from None
    for i, scheme in enumerate(rules.schemes):
        if not re.fullmatch(r"\S+", scheme):
            raise ConfigError(f"{source}: 'redact.schemes[{i}]' must be one word such as Bearer, not {scheme!r}")
    for i, pattern in enumerate(rules.patterns):
        if _regex(pattern, source, f"redact.patterns[{i}]").search("") is not None:
            raise ConfigError(f"{source}: 'redact.patterns[{i}]' matches the empty string: {pattern!r}")
    return rules


def _tables(table: dict[str, Any], key: str, source: str) -> list[dict[str, Any]]:
    value = table.get(key, [])
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        raise ConfigError(f"{source}: 'signature.{key}' must be an array of tables ([[signature.{key}]])")
    return value


def _bound(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else str(number)


def _shown(value: Any) -> str:
    """A bad value in an error, on one short line whatever it is."""
    if isinstance(value, int) and value.bit_length() > 64:
        return f"an integer of about {value.bit_length() * 0.30103:.0f} digits"  # str() refuses past 4300 digits
    return cut(repr(value), 60)


def _regex(pattern: str, source: str, where: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ConfigError(f"{source}: '{where}': bad regex {pattern!r}: {exc}") from exc


def _make(cls: type, table: dict[str, Any], source: str, where: str) -> Any:
    """`cls(**table)` with every value checked against the field's type."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(table) - names)
    if unknown:
        key = f"{where}.{unknown[0]}"
        raise ConfigError(f"{source}: unknown key {_shown(key)} (known here: {', '.join(sorted(names))})")
    missing = sorted(f.name for f in fields(cls) if f.name not in table and f.default is MISSING)
    if missing:
        raise ConfigError(f"{source}: '{where}' lacks the key '{missing[0]}'")
    values = {}
    for name, value in table.items():
        values[name] = _convert(hints[name], value, source, f"{where}.{name}")
    return cls(**values)


def _convert(hint: Any, value: Any, source: str, where: str) -> Any:
    if is_dataclass(hint):
        return value  # built by the caller
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{source}: '{where}' must be true or false, not {_shown(value)}")
    if hint in (int, float):
        kind = "an integer" if hint is int else "a number"
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (hint is int and not isinstance(value, int)):
            raise ConfigError(f"{source}: '{where}' must be {kind}, not {_shown(value)}")
        if where not in RANGES:
            raise ConfigError(f"{source}: '{where}': no range declared for this number")  # a bug of ours
        low, high = RANGES[where]
        if not low <= value <= high:  # before any conversion: an integer of 400 digits is no float; NaN fails too
            raise ConfigError(f"{source}: '{where}' must be {kind} from {_bound(low)} to {_bound(high)},"
                              f" not {_shown(value)}")
        return hint(value)
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{source}: '{where}' must be a string, not {_shown(value)}")
    if origin in (tuple, frozenset):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{source}: '{where}' must be a list, not {_shown(value)}")
        item = args[0]
        if all(is_dataclass(x) for x in value):
            return tuple(value)
        converted = [_convert(item, x, source, f"{where}[{i}]") for i, x in enumerate(value)]
        return origin(converted)
    raise ConfigError(f"{source}: '{where}': unsupported setting type {hint!r}")  # a bug of ours, said plainly
