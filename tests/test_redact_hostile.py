"""Redaction under hostile argv: cost linear in its size (bench/redact.py's shapes), planted
secrets never out, redacting twice the same as once, and no exception for any text at all
(bytes /proc or the kernel could hand over, NULs, lone surrogates)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from spawnwatch.bounded import STRING_WEIGHT
from spawnwatch.config import load
from spawnwatch.redact import REDACTED, Redactor

BENCH = Path(__file__).resolve().parent.parent / "bench" / "redact.py"
RULES = load().redact
R = REDACTED


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("redact_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# Run in a child with a deadline: a quadratic search holds the GIL inside one C call, where no
# pytest timeout can stop it.  It prints each shape's best CPU seconds at 32 KiB, 128 KiB, 1 MiB.
MEASURE = """
import json, runpy, sys, time
from spawnwatch.config import load
from spawnwatch.redact import Redactor

def cpu_seconds(word, runs):
    best = float("inf")
    for _ in range(runs):
        redact = Redactor(load().redact)
        started = time.process_time()
        redact(("prog", word))
        best = min(best, time.process_time() - started)
    return best

shapes = runpy.run_path(sys.argv[1])["SHAPES"]
print(json.dumps({name: [cpu_seconds(shape(32 << 10), 3), cpu_seconds(shape(128 << 10), 3), cpu_seconds(shape(1 << 20), 1)]
                  for name, shape in shapes.items()}))
"""
DEADLINE_S = 150  # about 15 s here on a loaded machine; quadratic, the first 1 MiB shape alone takes hours


@pytest.fixture(scope="module")
def costs() -> dict[str, list[float]]:
    try:
        done = subprocess.run([sys.executable, "-c", MEASURE, str(BENCH)], capture_output=True, text=True,
                              timeout=DEADLINE_S, check=True)
    except subprocess.TimeoutExpired:
        pytest.fail(f"redacting the hostile shapes took over {DEADLINE_S} s: no longer linear?")
    return json.loads(done.stdout)


def test_a_mebibyte_of_each_hostile_shape_redacts_within_a_second_or_two(costs):
    # Measured here: 0.15-0.4 s each (bench/redact.py).
    slow = {name: f"{seconds[2]:.2f} s" for name, seconds in costs.items() if seconds[2] >= 2.5}
    assert not slow, f"1 MiB of argv: {slow}"


def test_four_times_the_hostile_argv_costs_about_four_times_not_sixteen(costs):
    # CPU time on a shared machine wobbles (caches, neighbours): linear is ~4x, quadratic 16x.
    steep = {name: f"32 KiB {small * 1e3:.1f} ms, 128 KiB {large * 1e3:.1f} ms"
             for name, (small, large, _) in costs.items() if large > 6 * small + 0.005}
    assert not steep, steep


def test_the_bench_runs_at_a_small_size_and_says_flat(bench, capsys):
    assert bench.main(["--max-kib", "4"]) == 0
    out = capsys.readouterr().out
    assert "1 KiB" in out and "4 KiB" in out and "16 KiB" not in out and "flat: yes" in out
    assert all(name in out for name in bench.SHAPES)
    assert bench.is_flat([100.0, 240.0]) and not bench.is_flat([100.0, 260.0])


def test_the_bench_refuses_a_size_of_zero(bench, capsys):
    with pytest.raises(SystemExit) as exited:
        bench.parse_args(["--max-kib", "0"])
    assert exited.value.code == 2 and "--max-kib must be above 0" in capsys.readouterr().err


# Any text a process can put in argv: bytes decoded as /proc readers may (lone surrogates), NULs,
# terminal escapes, and the pieces every rule looks for.
PIECES = ["--token", "-a", "-p", "-u", "token", "=", ":", " ", "\t", "\n", "Bearer", "Basic", "Authorization:",
          "Authorization", "SSHPASS", "API_KEY", "-", "--", '"', "'", "x", "https://", "u", "@", "/", "?", "&",
          "{", "}", ",", R, "<", ">", "redis-cli", "curl", "mysql", "ghp_", "eyJ", "://", "\0", "\x1b[2J",
          "\x1b]0;title\x07", "\udcff", "é", "AWS4-HMAC-SHA256", "X-Amz-Signature", ".", "_"]
hostile_word = st.one_of(
    st.lists(st.sampled_from(PIECES), max_size=8).map("".join),
    st.binary(max_size=64).map(lambda raw: raw.decode("utf-8", "surrogateescape")),
    st.text(max_size=32),
)
hostile_argv = st.lists(hostile_word, min_size=1, max_size=6)

SECRET = st.text(alphabet="abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789", min_size=12, max_size=24)
FORMS = [
    lambda s: [f"--api-key={s}"], lambda s: [f"TOKEN={s}"], lambda s: [f'API_KEY="{s}"'], lambda s: ["--token", s],
    lambda s: [f"SSHPASS={s}"], lambda s: [f"DBPASSWORD={s}"], lambda s: ["--passphrase", s],
    lambda s: [f"Authorization: Bearer {s}"], lambda s: [f"Authorization: token {s}"], lambda s: [f"Authorization: Bot {s}"],
    lambda s: [f"Authorization: AWS4-HMAC-SHA256 Credential=a/b, SignedHeaders=host, Signature={s}"],
    lambda s: ["Authorization:", "token", s], lambda s: ["Authorization: Bearer", s], lambda s: ["Bearer", s],
    lambda s: [f"https://u:{s}@h/x"], lambda s: [f"https://h/x?access_token={s}&a=1"],
    lambda s: [f"https://b/k?X-Amz-Signature={s}"], lambda s: [f'{{"apiKey": "{s}"}}'],
    lambda s: ["redis-cli", "-a", s], lambda s: ["/usr/bin/curl", "-u", f"user:{s}"], lambda s: ["mysql", f"-p{s}"],
    lambda s: ["sshpass", "-p", s], lambda s: [f"ghp_{s}{s}"],
]
FILLER = ["node", "server.js", "-y", "--verbose", "x=1", "a:b", "https://example.com/p?q=1", "--port", "8080", "\x1b[31m"]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(argv=hostile_argv)
def test_any_text_redacts_without_raising_and_twice_is_once(argv):
    redact = Redactor(RULES)
    once = redact(argv)
    assert isinstance(once, tuple) and len(once) == len(argv) and all(isinstance(word, str) for word in once)
    assert Redactor(RULES)(once) == once


@settings(max_examples=400, deadline=None)
@given(secret=SECRET, form=st.sampled_from(FORMS), before=st.lists(st.sampled_from(FILLER), max_size=3),
       after=st.lists(st.sampled_from(FILLER), max_size=3), joined=st.booleans())
def test_a_planted_secret_never_comes_out(secret, form, before, after, joined):
    # A secret drawn inside the form's own text ("Authorizatio") would be found in what must stay.
    assume(not any(secret in word for word in [*form(""), *FILLER]))
    words = [*before, *form(secret), *after]
    program_bound = form(secret)[0] in ("redis-cli", "/usr/bin/curl", "mysql", "sshpass")
    argv = [" ".join(words)] if joined and not program_bound else words  # a program's options: its own words
    once = Redactor(RULES)(argv)
    assert not any(secret in word for word in once), (argv, once)
    assert Redactor(RULES)(once) == once


def test_the_argv_cache_is_bounded_by_what_its_argv_weigh_and_counts_each_eviction():
    """Distinct hostile argv of 4 KiB of one-letter words (each a string object): the cache
    keeps what fits its weight, not CACHE_SIZE of them."""
    redact = Redactor(RULES)
    words = 2048
    per_argv = words * (1 + STRING_WEIGHT)
    for n in range(Redactor.CACHE_SIZE):
        redact([f"{n}", *"x" * (words - 1)])
    fits = Redactor.CACHE_WEIGHT // per_argv
    assert fits < Redactor.CACHE_SIZE and Redactor.CACHE_SIZE - redact.evicted <= fits
    assert redact.evicted >= Redactor.CACHE_SIZE - fits
