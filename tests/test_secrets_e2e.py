"""No secret leaves spawnwatch, on the real kernel.

A leaky supervisor (tests/secret_leak.py) whose own argv and whose twelve
children's argv carry a secret of every form and shape, different in every
child, runs while these watch it: `trace --json --record`, `trace` (human),
`watch --json --record` with a webhook and metrics, `watch` (human) with an
Alertmanager webhook, and, to prove the checks can fail, `trace --json
--show-secrets --record` and `watch --json --show-secrets --record`.  While the
leak holds, `report`, `tree` and `reap`'s dry run (JSON and human) look at it.
Every output, body, scrape and recording must hold `<redacted>` and none of the
secrets; the --show-secrets ones must hold them all.
"""

from __future__ import annotations

import json
import secrets
import shlex
import signal
import socket
import stat
import string
import subprocess
import sys
import threading
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Callable

import pytest

from conftest import wait_for
from live import LiveCommand
from test_sinks import Receiver

pytestmark = [pytest.mark.root, pytest.mark.slow]

LEAK = Path(__file__).resolve().parent / "secret_leak.py"
SERVER = Path(__file__).resolve().parent / "secret_server.py"
CHILDREN = 12
INTERVAL_S = 1.2
REDACTED = "<redacted>"
ALNUM = string.ascii_letters + string.digits


def rand(n: int, alphabet: str = ALNUM) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(n))


def child_secrets() -> tuple[list[str], list[str]]:
    """(argv tail of one child, the secret parts in it): each form and shape once, all random."""
    k = {name: rand(24) for name in ("api", "env", "slack", "bearer", "url", "split", "quoted", "query", "json", "pw", "opt")}
    shapes = {
        "ghp": "ghp_" + rand(36), "sk": "sk-proj-" + rand(48), "ant": "sk-ant-api03-" + rand(40),
        "akia": "AKIA" + rand(16, string.ascii_uppercase + string.digits),
        "jwt": f"eyJhbGciOiJIUzI1NiJ9.eyJ{rand(30)}.{rand(40)}", "glpat": "glpat-" + rand(20),
        "github_pat": "github_pat_" + rand(40), "npm": "npm_" + rand(36), "xoxp": f"xoxp-{rand(10, string.digits)}-{rand(20)}",
    }
    argv = [
        f"--api-key={k['api']}", f"TOKEN={k['env']}", "--token", f"xoxb-{k['slack']}",
        f"Authorization: Bearer {k['bearer']}", f"https://mcp:{k['url']}@example.com/mcp",
        shapes["ghp"], shapes["sk"], shapes["akia"], shapes["jwt"],
        "-H", "Authorization:", "Bearer", k["split"], f'API_KEY="{k["quoted"]}"',
        f"https://example.com/sse?access_token={k['query']}&v=1", json.dumps({"apiKey": k["json"], "depth": 2}),
        "--password", k["pw"], shapes["ant"], shapes["glpat"], shapes["github_pat"], shapes["npm"], shapes["xoxp"],
        "--x-api-key", k["opt"],
    ]
    # What must never show: the random part of each (the AKIA and JWT prefixes are no secret).
    hidden = list(k.values()) + [shapes["akia"][4:], shapes["jwt"].split(".", 1)[1]] + [
        v for name, v in shapes.items() if name not in ("akia", "jwt")
    ]
    return argv, hidden


class Background:
    """A human-mode command: stdout and stderr to files, ready when `ready(stdout, stderr)` holds."""

    def __init__(self, tmp: Path, name: str, args: list[str], ready: Callable[[str, str], bool]) -> None:
        self.out, self.err = tmp / f"{name}.stdout", tmp / f"{name}.stderr"
        self._files = [open(self.out, "w"), open(self.err, "w")]
        self.process = subprocess.Popen([sys.executable, "-m", "spawnwatch", *args],
                                        stdout=self._files[0], stderr=self._files[1], text=True)
        self.ready = ready

    def text(self) -> tuple[str, str]:
        return self.out.read_text(), self.err.read_text()

    def wait_ready(self) -> None:
        def check() -> bool:
            assert self.process.poll() is None, f"{self.process.args} ended: {self.text()[1][-2000:]}"
            return self.ready(*self.text())

        wait_for(check, f"{self.process.args} to be ready", deadline=300)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=60)
        for f in self._files:
            f.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "spawnwatch", *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{args}: {done.stderr[-2000:]}"
    return done.stdout + done.stderr


class Session:
    outputs: dict[str, str]  # redacted outputs by name
    shown: dict[str, str]  # --show-secrets outputs by name
    recordings: dict[str, Path]
    hidden: list[str]  # every secret the leak carried
    alert: dict


@pytest.fixture(scope="module")
def session(tmp_path_factory) -> Session:
    tmp = tmp_path_factory.mktemp("secrets")
    plans = [child_secrets() for _ in range(CHILDREN)]
    (tmp / "plan.json").write_text(json.dumps([argv for argv, _ in plans]))
    own = {"api": rand(24), "token": rand(24), "ghp": "ghp_" + rand(36), "bearer": rand(24)}
    supervisor_argv = ["python3", str(LEAK), "supervise", f"--api-key={own['api']}", "--token", own["token"],
                       own["ghp"], f"Authorization: Bearer {own['bearer']}", str(tmp / "plan.json"), str(INTERVAL_S)]
    result = Session()
    result.hidden = list(own.values()) + [h for _, hidden in plans for h in hidden]
    result.recordings = {name: tmp / f"{name}.msgpack" for name in ("trace", "watch", "trace-shown", "watch-shown")}
    hook, alertmanager = Receiver(), Receiver()
    port = free_port()
    with ExitStack() as stack:
        stack.callback(hook.close)
        stack.callback(alertmanager.close)
        live = {
            "trace --json": LiveCommand("trace", "--json", "--record", str(result.recordings["trace"]), ready_timeout=300),
            "watch --json": LiveCommand("watch", "--json", "--record", str(result.recordings["watch"]),
                                        "--webhook", hook.url(), "--metrics-port", str(port), ready_timeout=300),
            "trace --show-secrets": LiveCommand("trace", "--json", "--show-secrets", "--record",
                                                str(result.recordings["trace-shown"]), ready_timeout=300),
            "watch --show-secrets": LiveCommand("watch", "--json", "--show-secrets", "--record",
                                                str(result.recordings["watch-shown"]), ready_timeout=300),
        }
        human = {
            "trace": Background(tmp, "trace", ["trace"], lambda out, err: "TIME(s)" in out),
            "watch": Background(tmp, "watch", ["watch", "--webhook", alertmanager.url("/api/v2/alerts")],
                                lambda out, err: "watching" in err),
        }
        for command in human.values():
            stack.callback(command.stop)
        for command in live.values():
            stack.enter_context(command)
        for command in human.values():
            command.wait_ready()

        supervisor = subprocess.Popen(supervisor_argv, executable=sys.executable, stdout=subprocess.PIPE, text=True)
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(supervisor.stdout), daemon=True)
        reader.start()
        try:
            def firing(records: list[dict]) -> dict | None:
                return next((r for r in records if r["kind"] == "alert" and r["state"] == "firing"
                             and r["rule"] == "accumulating" and r["spawner"]["pid"] == supervisor.pid), None)

            result.alert = wait_for(lambda: firing(live["watch --json"].snapshot()), "the accumulating alert", 180)
            wait_for(lambda: len(lines) == CHILDREN, "every child started", 120)
            wait_for(lambda: any(a["labels"]["spawner_pid"] == str(supervisor.pid) for _, b in alertmanager.bodies for a in b),
                     "the Alertmanager body", 60)
            wait_for(lambda: any(b.get("spawner", {}).get("pid") == supervisor.pid for _, b in hook.bodies),
                     "the webhook body", 60)
            wait_for(lambda: str(supervisor.pid) in human["watch"].text()[0], "the human alert", 60)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as response:
                metrics = response.read().decode()
            signature = result.alert["signature"]
            pid = str(supervisor.pid)
            # `reap --signature` also takes a child's command line as typed, secrets and all.
            typed = shlex.join(["python3", str(SERVER), *plans[0][0]])
            snapshots = {
                "report --json": run("report", "--json"),
                "report": run("report"),
                "tree --json": run("tree", "--pid", pid, "--json"),
                "tree": run("tree", "--pid", pid),
                "reap --json": run("reap", "--signature", signature, "--spawner", pid, "--json"),
                "reap": run("reap", "--signature", signature, "--spawner", pid),
                "reap by command line": run("reap", "--signature", typed, "--spawner", pid, "--json"),
            }
        finally:
            supervisor.send_signal(signal.SIGTERM)
            supervisor.wait(timeout=60)
    result.outputs = {
        **{name: json.dumps(command.records) + command.stderr for name, command in live.items()
           if "show-secrets" not in name},
        **{f"{name} (human)": "".join(command.text()) for name, command in human.items()},
        **snapshots,
        "webhook": json.dumps(hook.bodies),
        "alertmanager": json.dumps(alertmanager.bodies),
        "metrics": metrics,
        **{f"{name} recording": path.read_bytes().decode("utf-8", "replace")
           for name, path in result.recordings.items() if "shown" not in name},
    }
    result.shown = {
        "trace --show-secrets": json.dumps(live["trace --show-secrets"].records),
        "trace-shown recording": result.recordings["trace-shown"].read_bytes().decode("utf-8", "replace"),
        "watch-shown recording": result.recordings["watch-shown"].read_bytes().decode("utf-8", "replace"),
    }
    return result


OUTPUTS = ["trace --json", "watch --json", "trace (human)", "watch (human)", "report --json", "report",
           "tree --json", "tree", "reap --json", "reap", "reap by command line", "webhook", "alertmanager",
           "metrics", "trace recording", "watch recording"]


@pytest.mark.parametrize("name", OUTPUTS)
def test_no_secret_in_any_output(session, name):
    text = session.outputs[name]
    leaked = [secret for secret in session.hidden if secret in text]
    assert not leaked, f"{name} shows {len(leaked)} secrets, e.g. {leaked[0]!r}"
    assert REDACTED in text, f"{name} shows no {REDACTED}: the leak is not in it"


def test_launches_with_different_secrets_are_one_group(session):
    alert = session.alert
    assert alert["live"] >= 9 and alert["signature"].startswith(f"python secret_server.py --api-key={REDACTED}")
    assert REDACTED in " ".join(alert["spawner"]["argv"])


def test_recordings_are_private(session):
    for name, path in session.recordings.items():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, name


@pytest.mark.parametrize("name", ["trace --show-secrets", "trace-shown recording", "watch-shown recording"])
def test_show_secrets_shows_them(session, name):
    missing = [secret for secret in session.hidden if secret not in session.shown[name]]
    assert not missing, f"{name} lacks {len(missing)} secrets, e.g. {missing[0]!r}"
