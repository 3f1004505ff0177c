"""Every number of the config has a range: a bad value is a usage error (exit 2) naming
the key and what it accepts, through the real CLI, never a traceback."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from spawnwatch.cli import main
from spawnwatch.config import default_text

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

RECORDING = Path(__file__).resolve().parent / "fixtures" / "snapshot.msgpack"


def numeric_keys(table: dict, where: str = "") -> list[tuple[str, str]]:
    """(table, key) of every number in the default config, found by walking it, not by a list of ours."""
    found = []
    for key, value in table.items():
        if isinstance(value, dict):
            found += numeric_keys(value, f"{where}{key}.")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            found.append((where.rstrip("."), key))
    return found


NUMERIC_KEYS = numeric_keys(tomllib.loads(default_text()))


def check_config(tmp_path: Path, table: str, line: str):
    config = tmp_path / "config.toml"
    config.write_text(f"[{table}]\n{line}\n")
    return CliRunner().invoke(main, ["watch", "--config", str(config), "--replay", str(RECORDING), "--json"],
                              catch_exceptions=False)


def assert_usage_error(result, *words: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    [line] = [text for text in result.stderr.splitlines() if text.startswith("Error:")]
    assert "--config" in line and all(word in line for word in words), line


@pytest.mark.parametrize("table, key", NUMERIC_KEYS, ids=[f"{t}.{k}" for t, k in NUMERIC_KEYS])
def test_every_number_has_an_upper_bound(tmp_path, table, key):
    assert_usage_error(check_config(tmp_path, table, f"{key} = 1_000_000_000_000"), f"'{table}.{key}'", " to ")


@pytest.mark.parametrize("table, line, words", [
    pytest.param("lineage", "retention_s = " + "9" * 400, ("'lineage.retention_s'", "about 400 digits"),
                 id="400 digits for a float"),
    pytest.param("alerts", "max_pids = " + "9" * 400, ("'alerts.max_pids'", "about 400 digits"),
                 id="400 digits for an integer"),
    pytest.param("lineage", "retention_s = " + "9" * 5000, ("not valid TOML", "digits"),
                 id="5000 digits"),
    pytest.param("signature", "max_length = 0", ("'signature.max_length'", "from 64 to"), id="max_length 0"),
    pytest.param("signature", "max_length = 1", ("'signature.max_length'", "from 64 to"), id="max_length 1"),
    pytest.param("rules.accumulating", "min_live = 1", ("'rules.accumulating.min_live'", "from 2 to"),
                 id="min_live 1 fires on any spawner"),
    pytest.param("detect", "memory_every_s = 0", ("'detect.memory_every_s'", "from 0.1 to"),
                 id="sampling with no pause"),
    pytest.param("alerts", "update_every_s = 0", ("'alerts.update_every_s'", "from 1 to"),
                 id="re-sent at every evaluation"),
    pytest.param("rules.orphaned_containers", "match_window_s = 0", ("match_window_s'", "from 1 to"),
                 id="a window that joins nothing"),
])
def test_a_bad_number_is_a_usage_error_naming_the_key_and_its_range(tmp_path, table, line, words):
    assert_usage_error(check_config(tmp_path, table, line), *words)
