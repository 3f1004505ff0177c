"""Secrets out of argv: every form and shape of the default rules, the look-alikes
they keep, signatures that ignore the secrets, and the config's [redact] errors."""

from __future__ import annotations

import json
import random
import stat
import string
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import wait_for
from records import encode
from spawnwatch.adapters import procfs
from spawnwatch.cli import main
from spawnwatch.config import ConfigError, load
from spawnwatch.events import Exec, Fork, ProcessInfo, Snapshot, to_record
from spawnwatch.probe import Probe, layout
from spawnwatch.recording import RecordingWriter, read_records
from spawnwatch.redact import REDACTED, Redactor, RedactRules, segments
from spawnwatch.signature import Signer

R = REDACTED
redact = Redactor(load().redact)

GHP = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"


@pytest.mark.parametrize(
    "argv, expected",
    [
        # K=v, also env style with quotes the shell did not strip
        (["npx", "-y", "@21st-dev/magic@latest", 'API_KEY="k3y-v4lue"'],
         ["npx", "-y", "@21st-dev/magic@latest", f'API_KEY="{R}"']),
        (["env", "OPENAI_API_KEY=abc", "GITHUB_TOKEN='t0k'", "node", "s.js"],
         ["env", f"OPENAI_API_KEY={R}", f"GITHUB_TOKEN='{R}'", "node", "s.js"]),
        # --k=v and -k=v
        (["node", "s.js", "--api-key=s3cret", "--x-api-key=v", "-token=v", "--apiKey=v"],
         ["node", "s.js", f"--api-key={R}", f"--x-api-key={R}", f"-token={R}", f"--apiKey={R}"]),
        # --k v, -key v (the next word); a flag followed by the next option keeps it
        (["s", "--token", "xyz", "--password", "hunter2", "-secret", "v", "--auth", "--verbose"],
         ["s", "--token", R, "--password", R, "-secret", R, "--auth", "--verbose"]),
        # header forms: one word, split words, scheme alone
        (["curl", "-H", "Authorization: Bearer abc.def"], ["curl", "-H", f"Authorization: Bearer {R}"]),
        (["curl", "-H", "Authorization:", "Bearer", "abc"], ["curl", "-H", "Authorization:", "Bearer", R]),
        (["curl", "-H", "Authorization: Bearer", "abc"], ["curl", "-H", "Authorization: Bearer", R]),
        (["curl", "-H", "authorization:Basic dXNlcjpwYXNz"], ["curl", "-H", f"authorization:Basic {R}"]),
        (["curl", "-H", "Authorization: abc"], ["curl", "-H", f"Authorization: {R}"]),
        (["x", "Bearer", "abc", "Basic dXNlcjpwYXNz"], ["x", "Bearer", R, f"Basic {R}"]),
        (["curl", "-H", "X-Api-Key: abc", "-H", "Cookie: sid=1"], ["curl", "-H", f"X-Api-Key: {R}", "-H", f"Cookie: {R}"]),
        # URL userinfo (the password) and query parameters
        (["git", "clone", "https://user:p4ss@example.com/r.git"], ["git", "clone", f"https://user:{R}@example.com/r.git"]),
        (["psql", "postgres://app:p@ss:w0rd@db:5432/x"], ["psql", f"postgres://app:{R}@db:5432/x"]),
        (["curl", "https://h/x?access_token=abc&page=2"], ["curl", f"https://h/x?access_token={R}&page=2"]),
        (["git", "clone", "ssh://git@github.com/a/b"], ["git", "clone", "ssh://git@github.com/a/b"]),
        # JSON config in one word
        (["mcp", "--config", '{"githubToken":"abc","name":"n"}'], ["mcp", "--config", f'{{"githubToken":"{R}","name":"n"}}']),
        (["mcp", '{"apiKey": "abc", "depth": 3}'], ["mcp", f'{{"apiKey": "{R}", "depth": 3}}']),
        # secrets inside a shell command or a rewritten process title
        (["sh", "-c", "node s.js --api-key abc --token 'x y' API_KEY=z; true"],
         ["sh", "-c", f"node s.js --api-key {R} --token '{R}' API_KEY={R}; true"]),
        (["npm exec magic --token abc"], [f"npm exec magic --token {R}"]),
        # well-known token shapes anywhere in a word
        ([GHP, "gho_" + "x" * 36, "ghs_" + "y" * 36, "ghu_" + "z" * 36], [R, R, R, R]),
        (["github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz"], [R]),
        (["sk-" + "a" * 48, "sk-proj-" + "b" * 60, "sk-ant-api03-" + "c" * 80], [R, R, R]),
        (["xoxb-1234567890-0987654321-AbCdEfGhIjKlMnOp", "xoxp-1-2-3-abcdef"], [R, R]),
        (["AKIAIOSFODNN7EXAMPLE", "--region", "us-east-1"], [R, "--region", "us-east-1"]),
        ([JWT, f"jwt:{JWT}"], [R, f"jwt:{R}"]),
        (["glpat-" + "x" * 20, "npm_" + "y" * 36, "hf_" + "z" * 34], [R, R, R]),
        (["AIzaSyA-1234567890abcdefghijklmnopqrstu"], [R]),
        (["sk_live_" + "4" * 24], [R]),
        ([f"--github={GHP}", f"https://x-access-token:{GHP}@github.com"], [f"--github={R}", f"https://x-access-token:{R}@github.com"]),
        (["https://" + GHP + "@github.com/a/b"], [f"https://{R}@github.com/a/b"]),
        # an unclosed quote (argv cut by the kernel) still hides the rest
        (['API_KEY="abc'], [f'API_KEY="{R}']),
        # the word after an option: leading blanks, and more secrets after its value
        (["--token", " abc"], ["--token", f" {R}"]),
        (["--token", f"abc {GHP} --password x"], ["--token", f"{R} {R} --password {R}"]),
        (["Basic --token", "abc"], [f"Basic {R}", R]),
    ],
)
def test_each_form_and_shape_is_redacted(argv, expected):
    assert redact(argv) == tuple(expected)


AWS4 = ("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, "
        "SignedHeaders=content-type;host;x-amz-date, Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7")


@pytest.mark.parametrize(
    "argv, expected",
    [
        # any scheme after Authorization:, and all of the header after it
        (["curl", "-H", "Authorization: token abc"], ["curl", "-H", f"Authorization: token {R}"]),
        (["curl", "-H", "Authorization: Bot abc.def"], ["curl", "-H", f"Authorization: Bot {R}"]),
        (["curl", "-H", f"Authorization: {AWS4}"], ["curl", "-H", f"Authorization: AWS4-HMAC-SHA256 {R}"]),
        (["curl", "-H", "Proxy-Authorization: Digest username=u, response=abc"], ["curl", "-H", f"Proxy-Authorization: Digest {R}"]),
        (["curl", "-H", "Authorization:", "token", "abc"], ["curl", "-H", "Authorization:", R, R]),
        (["sh", "-c", "curl -H 'Authorization: token abc' https://h/x"], ["sh", "-c", f"curl -H 'Authorization: token {R}' https://h/x"]),
        # names that contain a secret word with no separator
        (["env", "SSHPASS=abc", "DBPASSWORD=abc", "PGPASSWORD=abc", "myAPIKEY=abc"],
         ["env", f"SSHPASS={R}", f"DBPASSWORD={R}", f"PGPASSWORD={R}", f"myAPIKEY={R}"]),
        (["gpg", "--passphrase", "abc", "--passphrase-fd=0"], ["gpg", "--passphrase", R, f"--passphrase-fd={R}"]),
        # a program's own options, next or glued, after its name (its path, behind sudo)
        (["redis-cli", "-a", "abc", "ping"], ["redis-cli", "-a", R, "ping"]),
        (["sudo", "/usr/bin/redis-cli", "-h", "h", "-aabc"], ["sudo", "/usr/bin/redis-cli", "-h", "h", f"-a{R}"]),
        (["curl", "-u", "user:abc", "https://x"], ["curl", "-u", R, "https://x"]),
        (["curl", "--user=user:abc"], ["curl", f"--user={R}"]),
        (["mysql", "-pabc", "-P", "3306", "db"], ["mysql", f"-p{R}", "-P", "3306", "db"]),
        (["sshpass", "-p", "abc", "ssh", "h"], ["sshpass", "-p", R, "ssh", "h"]),
        # credentials in a URL: userinfo, query tokens, signed URLs
        (["curl", "https://b.s3.amazonaws.com/k?X-Amz-Credential=abc%2F2&X-Amz-Signature=abc&x=1"],
         ["curl", f"https://b.s3.amazonaws.com/k?X-Amz-Credential={R}&X-Amz-Signature={R}&x=1"]),
        (["curl", "https://a.blob.core.windows.net/c?sv=2020&sig=abc"], ["curl", f"https://a.blob.core.windows.net/c?sv=2020&sig={R}"]),
        # shapes whatever their name
        (["x", "ya29.a0AfH6SMBx3abcdefghijklmnop", "pypi-AgEIcHlwaS5vcmc" + "x" * 60],  ["x", R, R]),
        (["x", "SG.abcdefghijklmnopqr.abcdefghijklmnopqrstuv", "dapi" + "0123456789abcdef" * 2], ["x", R, R]),
        (["x", "-----BEGIN OPENSSH PRIVATE KEY-----abc-----END OPENSSH PRIVATE KEY-----"],
         ["x", f"-----BEGIN OPENSSH PRIVATE KEY-----{R}-----END OPENSSH PRIVATE KEY-----"]),
        (["curl", "https://hooks.slack.com/services/T000/B000/XXXX"], ["curl", f"https://hooks.slack.com/services/{R}"]),
    ],
)
def test_secrets_that_got_through_are_redacted(argv, expected):
    assert redact(argv) == tuple(expected)


@pytest.mark.parametrize(
    "argv",
    [
        ["python", "train.py", "--tokenizer", "gpt2", "--max-tokens", "100"],
        ["git", "log", "--author", "x", "--keyboard", "us"],
        ["cat", "/etc/ssl/private/server.key", "/home/u/.ssh/id_ed25519"],
        ["ssh", "-p", "22", "-i", "id", "-o", "ProxyJump=bastion"],
        ["risk-assessment-tool-for-everything", "desk-0123456789abcdefghij"],
        ["npx", "-y", "@modelcontextprotocol/server-github"],
        ["docker", "run", "-i", "--rm", "-e", "GITHUB_PERSONAL_ACCESS_TOKEN", "ghcr.io/github/github-mcp-server"],
        ["node", "--require", "./tokens.js", "keys.js", "author=me", "https://example.com:8443/x"],
        ["bash", "-c", "echo basically; make monkey"],
        ["docker", "run", "-p", "8080:80", "-a", "stdout", "img"],
        ["ssh", "-p", "22", "-A", "h"],
        ["kill", "--signal", "TERM", "1"],
        ["node", "--passes", "3", "--bypass-cache", "--compass", "n"],
        ["curl", "-v", "-o", "out", "https://example.com:8443/a?page=2&sort=name"],
        ["echo", "Authorization", "header", "token", "list"],
    ],
)
def test_look_alikes_are_kept(argv):
    assert redact(argv) == tuple(argv)


def test_a_key_option_takes_its_value_whatever_it_looks_like():
    # `--key` cannot tell a path from a secret: its value goes, the option name stays.
    assert redact(["nginx-like", "--tls-key", "/etc/ssl/private/k.pem"]) == ("nginx-like", "--tls-key", R)


@pytest.mark.parametrize(
    "name, found",
    [("--x-api-key", ("x", "api", "key")), ("authToken", ("auth", "token")), ("OPENAI_API_KEY", ("openai", "api", "key")),
     ("XApiKey", ("x", "api", "key")), ("--tokenizer", ("tokenizer",)), ("a.b_c", ("a", "b", "c"))],
)
def test_names_split_into_segments(name, found):
    assert segments(name) == found


def test_redacting_twice_changes_nothing():
    argv = ["s", "--api-key=a", "--token", "b", "Authorization: Bearer c", "https://u:p@h", GHP, JWT]
    once = redact(argv)
    assert R in once[1] and redact(once) == once


def test_launches_that_differ_only_in_secrets_share_a_signature():
    sign = Signer(load().signature)

    def launch(secret: str) -> str:
        return sign(redact(["node", "server.js", f"--api-key={secret}", "--token", secret, f"ghp_{secret * 9}"]))

    assert launch("aaaa") == launch("bbbb") == f"node server.js --api-key={R} --token {R} {R}"


def test_empty_rules_redact_nothing():
    argv = ("s", "--api-key=a", GHP)
    assert Redactor(RedactRules())(argv) == argv


def test_execs_and_snapshots_are_redacted_other_events_pass():
    exec_ = Exec(ts=1.0, pid=2, ppid=1, comm="node", cgroup_id=0, argv=("node", "--token", "abc"))
    assert redact.event(exec_).argv == ("node", "--token", R)
    snapshot = Snapshot(ts=1.0, processes=(ProcessInfo(pid=2, ppid=1, start=0.5, comm="node", argv=("node", GHP)),))
    assert redact.event(snapshot).processes[0].argv == ("node", R)
    fork = Fork(ts=1.0, pid=3, ppid=2, comm="node", cgroup_id=0)
    assert redact.event(fork) is fork


def test_user_rules_replace_the_default_lists(tmp_path):
    config = tmp_path / "redact.toml"
    config.write_text("[redact]\nkeys = ['license']\npatterns = ['LIC-[0-9]+']\n")
    custom = Redactor(load(config).redact)
    assert custom(["app", "--license", "x", "LIC-42", "--token", "t"]) == ("app", "--license", R, R, "--token", "t")


@pytest.mark.parametrize(
    "text, message",
    [
        ("[redact]\npatterns = ['(']\n", "'redact.patterns[0]': bad regex"),
        ("[redact]\npatterns = ['x*']\n", "'redact.patterns[0]' matches the empty string"),
        ("[redact]\nkeys = ['--']\n", "'redact.keys[0]' must be a name"),
        ("[redact]\nkeys = 'token'\n", "'redact.keys' must be a list"),
        ("[redact]\nschemes = ['Bearer token']\n", "'redact.schemes[0]' must be one word"),
        ("[redact]\nreplacement = 'x'\n", "unknown key 'redact.replacement'"),
        ("[redact]\noptions = ['curl']\n", "'redact.options': 'curl' is not a program and one of its options"),
        ("[redact]\ncontains = ['']\n", "'redact.contains[0]' must be a name"),
    ],
)
def test_config_errors_name_the_key(tmp_path, text, message):
    config = tmp_path / "bad.toml"
    config.write_text(text)
    with pytest.raises(ConfigError, match="bad.toml") as raised:
        load(config)
    assert message in str(raised.value)


def test_the_probe_redacts_the_kernels_argv_and_the_proc_fallback():
    probe = Probe(parent_of=lambda pid: 1, argv_of=lambda pid: ("node", "--token", "from-proc"))
    events = probe.decode_batch([
        encode(Exec(1.0, 10, 1, "node", 1, ("node", "--api-key=from-kernel"), "/usr/bin/node")),
        encode(Exec(1.1, 11, 1, "node", 1, (), "/usr/bin/node", True), layout.FLAG_ARGV_MISSING),
    ])
    assert [e.argv for e in events] == [("node", f"--api-key={R}"), ("node", "--token", R)]
    shown = Probe(argv_of=lambda pid: None, redact=Redactor(RedactRules()))
    [raw] = shown.decode_batch([encode(Exec(1.0, 10, 1, "node", 1, ("node", "--api-key=k"), "/usr/bin/node"))])
    assert raw.argv == ("node", "--api-key=k")


def test_the_proc_snapshot_is_redacted(tmp_path):
    script = tmp_path / "sleeper.py"
    script.write_text("import time\ntime.sleep(60)\n")
    child = subprocess.Popen([sys.executable, str(script), "--api-key=snapshot-secret", GHP])
    try:
        def seen() -> ProcessInfo | None:
            return next((p for p in procfs.snapshot().processes if p.pid == child.pid and len(p.argv) == 4), None)

        process = wait_for(seen, "the sleeper in /proc")
        assert process.argv == (sys.executable, str(script), f"--api-key={R}", R)
        shown = next(p for p in procfs.snapshot(Redactor(RedactRules())).processes if p.pid == child.pid)
        assert shown.argv[2:] == ("--api-key=snapshot-secret", GHP)
    finally:
        child.kill()
        child.wait()


def test_proc_argv_is_read_up_to_the_kernels_bound(tmp_path):
    # 1 MiB of argv (16 words of 64 KiB: one word holds 128 KiB at most) in /proc costs a snapshot
    # what the kernel side's 4 KiB would, no more.
    script = tmp_path / "sleeper.py"
    script.write_text("import time\ntime.sleep(60)\n")
    child = subprocess.Popen([sys.executable, str(script), "--api-key=abc", *["x" * (1 << 16)] * 16])
    try:
        def seen() -> ProcessInfo | None:
            return next((p for p in procfs.snapshot().processes if p.pid == child.pid and len(p.argv) > 2), None)

        process = wait_for(seen, "the long sleeper in /proc")
        assert process.argv[:3] == (sys.executable, str(script), f"--api-key={R}")
        raw = procfs.argv(child.pid)
        assert len("\0".join(raw).encode()) <= 4096 and raw[3] == "x" * len(raw[3])
    finally:
        child.kill()
        child.wait()


@pytest.mark.parametrize("existing", [None, 0o644])
def test_recordings_are_private(tmp_path, existing):
    path = tmp_path / "rec.msgpack"
    if existing is not None:
        path.write_bytes(b"old")
        path.chmod(existing)
    with RecordingWriter(path) as writer:
        writer.write({"kind": "ready", "pid": 1})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert list(read_records(path)) == [{"kind": "ready", "pid": 1}]


def raw_recording(path: Path) -> None:
    """A recording with argv in clear, as `--show-secrets` (or an old spawnwatch) writes it."""
    leaky = ("node", "server.js", "--api-key=replayed-secret")
    with RecordingWriter(path) as writer:
        writer.write(to_record(Snapshot(ts=100.0, processes=(
            ProcessInfo(pid=1, ppid=0, start=0.0, comm="init", argv=("init",)),
            ProcessInfo(pid=50, ppid=1, start=1.0, comm="node", argv=("node", "supervisor.js", GHP)),
        ))))
        for i in range(12):
            ts = 101.0 + 2 * i
            writer.write(to_record(Fork(ts, 100 + i, 50, "node", 0)))
            secret = f"{leaky[2]}-{'abcdefghijkl'[i]}"  # letters: no mask of the signature hides them
            writer.write(to_record(Exec(ts + 0.1, 100 + i, 50, "node", 0, (*leaky[:2], secret), "/usr/bin/node")))


def test_a_replay_redacts_a_recording_made_with_secrets(tmp_path):
    path = tmp_path / "raw.msgpack"
    raw_recording(path)
    result = CliRunner().invoke(main, ["watch", "--replay", str(path), "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    [alert, *_] = [json.loads(line) for line in result.stdout.splitlines() if '"alert"' in line]
    # Twelve launches with twelve different keys are one group once the keys are gone.
    assert alert["signature"] == f"node server.js --api-key={R}" and alert["live"] >= 9
    assert alert["spawner"]["argv"] == ["node", "supervisor.js", R]
    assert "replayed-secret" not in result.stdout and GHP not in result.stdout
    # With the keys shown, each launch is a group of its own: nothing accumulates.
    shown = CliRunner().invoke(main, ["watch", "--replay", str(path), "--json", "--show-secrets"])
    assert shown.exit_code == 0 and '"alert"' not in shown.stdout


def test_show_secrets_says_what_it_does():
    for command in ("trace", "watch"):
        help_text = " ".join(CliRunner().invoke(main, [command, "--help"]).stdout.split())
        assert "--show-secrets" in help_text and "carry API keys, tokens and passwords in clear" in help_text


def test_trace_takes_the_config_too(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text("[redact]\npatterns = ['(']\n")
    result = CliRunner().invoke(main, ["trace", "--config", str(config)])
    assert result.exit_code == 2 and "'redact.patterns[0]': bad regex" in result.stderr
    assert "Traceback" not in result.stderr


# Generated cases: a secret in each form among ordinary words, as separate words, inside one
# word (a shell command, a process title) or glued to one by a separator.
FILLER = ["node", "server.js", "-y", "--verbose", "x=1", "a:b", "https://example.com/p?q=1", "--port", "8080",
          "{", "}", "'", '"', "", "path/to", "--", "-"]
FORMS = [
    lambda s: [f"--api-key={s}"], lambda s: [f"TOKEN={s}"], lambda s: [f'API_KEY="{s}"'], lambda s: ["--token", s],
    lambda s: ["-password", s], lambda s: [f"Authorization: Bearer {s}"], lambda s: ["Authorization:", "Bearer", s],
    lambda s: ["Authorization: Bearer", s], lambda s: ["Bearer", s], lambda s: [f"https://u:{s}@h/x"],
    lambda s: [f"ghp_{s}"], lambda s: [f'{{"apiKey": "{s}"}}'], lambda s: [f"https://h/?access_token={s}&a=1"],
    lambda s: [f"x-api-key: {s}"], lambda s: ["--x-api-key", s], lambda s: [f"--secret='{s}'"],
]


def generated_argv(rng: random.Random) -> tuple[str, list[str]]:
    secret = "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(24))
    form = rng.choice(FORMS)(secret)
    words = [rng.choice(FILLER) for _ in range(rng.randint(0, 3))] + form + [rng.choice(FILLER) for _ in range(rng.randint(0, 3))]
    if rng.random() < 0.4:
        words = [" ".join(words)]
    elif len(form) == 1 and rng.random() < 0.3:
        words = [rng.choice(FILLER) + rng.choice([" ", ";", ",", "&", "\t", " && "]) + form[0]]
    return secret, words


@pytest.mark.parametrize("seed", range(4))
def test_generated_secrets_never_survive_and_redaction_is_stable(seed):
    rng = random.Random(seed)
    for _ in range(2000):
        secret, argv = generated_argv(rng)
        once = redact(argv)
        assert not any(secret in word for word in once), (argv, once)
        assert redact(once) == once, (argv, once)


PIECES = ["--token", "token", "=", ":", " ", "\t", "Bearer", "Basic", "Authorization", "API_KEY", "-", "--", '"', "'",
          "abc", "x", GHP, "https://", "u", "@", "/", "?", "&", "{", "}", ",", R, "key", ".", "_"]


@pytest.mark.parametrize("seed", range(2))
def test_redacting_any_mix_of_the_rules_pieces_twice_changes_nothing(seed):
    rng = random.Random(seed)
    for _ in range(3000):
        argv = ["".join(rng.choice(PIECES) for _ in range(rng.randint(0, 6))) for _ in range(rng.randint(1, 4))]
        once = redact(argv)
        assert redact(once) == once, (argv, once)
