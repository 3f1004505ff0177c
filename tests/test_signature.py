"""argv -> signature with the default rules, and rules as data."""

from __future__ import annotations

import shlex

import pytest

from spawnwatch.config import load
from spawnwatch.signature import Launcher, Mask, SignatureRules, Signer, clean_argv

SIGN = Signer(load().signature)


def sign(command: str) -> str:
    return SIGN(shlex.split(command))


@pytest.mark.parametrize(
    "command",
    [
        "node /usr/bin/npm exec --yes --package=@21st-dev/magic@0.2.3 -- magic",
        "npm exec @21st-dev/magic@latest",
        "npx -y @21st-dev/magic",
        "/usr/bin/env node /usr/bin/npm exec --yes --package @21st-dev/magic -- magic",
        "node /usr/lib/node_modules/npm/bin/npx-cli.js -y @21st-dev/magic@0.2.3",
        "npm exec magic",  # npm's process title, what /proc shows for the first form
        "npm exec @21st-dev/magic@latest",  # ... and for the second
    ],
)
def test_the_issue_forms_of_one_mcp_server_are_one_signature(command):
    assert sign(command) == "npm exec magic"


def test_a_process_title_padded_with_empty_words_is_split():
    assert SIGN(["npm exec magic"] + [""] * 40) == "npm exec magic"
    assert clean_argv(["npm exec magic", "", ""]) == ["npm", "exec", "magic"]


def test_local_packages_are_named_by_their_bin_with_the_directory_masked():
    live = "node /usr/bin/npm exec --yes --package=file:/tmp/spawnwatch-sim-x1y2/mcp-servers -- fs-server"
    assert sign(live) == sign("npm exec fs-server") == "npm exec fs-server"
    assert sign("npx -y file:/tmp/tmpk2l3m4/pkg") == sign("npx file:/tmp/other/pkg") == "npm exec file:/tmp/<tmp>"


def test_server_arguments_stay_in_the_signature_masked():
    assert sign("npx -y @modelcontextprotocol/server-filesystem /tmp/abc") == "npm exec server-filesystem /tmp/<tmp>"
    assert sign("npx -y @modelcontextprotocol/server-filesystem /srv/a") != sign(
        "npx -y @modelcontextprotocol/server-filesystem /srv/b"
    )


def test_the_grandchildren_of_npm_exec_have_stable_signatures():
    assert sign("sh -c 'magic'") == sign("sh -c magic") == "sh -c magic"
    a = "node /root/.npm/_npx/1b4999a6280848f8/node_modules/.bin/magic"
    b = "node /root/.npm/_npx/77aa00ff11223344/node_modules/.bin/magic"
    assert sign(a) == sign(b) == "node magic"


@pytest.mark.parametrize(
    "command, expected",
    [
        ("uvx mcp-server-fetch@1.2.0", "uvx mcp-server-fetch"),
        ("uvx --from mcp-server-git==0.6 mcp-server-git --repository /srv/r", "uvx mcp-server-git --repository /srv/r"),
        ("uv tool run mcp-server-time", "uvx mcp-server-time"),
        ("python3.11 -m mcp_server_time --local-timezone=UTC", "python -m mcp_server_time --local-timezone=UTC"),
        ("/usr/bin/python3 -u /opt/servers/weather.py", "python weather.py"),
        ("node --max-old-space-size=4096 /srv/app/server.js --port 3000", "node server.js --port <n>"),
        ("node -r ts-node/register src/index.ts", "node index.ts"),
    ],
)
def test_interpreters_and_launchers(command, expected):
    assert sign(command) == expected


@pytest.mark.parametrize(
    "command, expected",
    [
        ("worker --port=8080 --id 4711", "worker --port=<n> --id <n>"),
        ("worker --listen 127.0.0.1:9000", "worker --listen <n>.<n>.<n>.<n>:<n>"),
        ("worker --session 123e4567-e89b-12d3-a456-426614174000", "worker --session <uuid>"),
        ("worker --trace deadbeef01234567", "worker --trace <hex>"),
        ("worker --socket /run/user/1000/app/sock --tmp /var/tmp/x9/y", "worker --socket /run/user/<n>/<tmp> --tmp /var/tmp/<tmp>"),
        ("make -j4", "make -j4"),  # a word-bound number is part of the word
        ("gcc -c foo.c -o foo.o", "gcc -c foo.c -o foo.o"),
    ],
)
def test_volatile_tokens_are_masked(command, expected):
    assert sign(command) == expected


def test_wrappers_are_stripped():
    assert sign("env NODE_ENV=production nohup node server.js") == "node server.js"


def test_no_argv_falls_back_to_comm():
    assert SIGN((), "kworker/0:1") == "[kworker/0:1]"


def test_signatures_are_bounded():
    rules = load().signature
    long = ["worker"] + [f"--flag-{chr(97 + i)}" for i in range(20)]
    signature = SIGN(long)
    assert signature.endswith("…") and signature.count(" ") == rules.max_args + 1
    assert len(SIGN(["x" * 500])) == rules.max_length


def test_rules_are_data():
    rules = SignatureRules(
        launchers=(Launcher(display="run", commands=(("mytool", "run"),), package_options=frozenset({"--pkg"}),
                            version=r"@\d.*$"),),
        masks=(Mask(pattern=r"job-\w+", replacement="job-<id>"),),
    )
    signer = Signer(rules)
    assert signer(["mytool", "run", "--pkg", "thing@2.0"]) == "run thing"
    assert signer(["mytool", "run", "thing", "job-a1"]) == "run thing job-<id>"
    assert signer(["npx", "-y", "pkg"]) == "npx -y pkg"  # no default rules in a bare SignatureRules


@pytest.mark.parametrize(
    "argv, program",
    [
        (("node", "host.js"), "node host.js"),
        (("node", "/opt/mcp/server.js", "--port", "3"), "node server.js"),
        (("npx", "-y", "@21st-dev/magic@latest", "API_KEY=x"), "npm exec magic"),
        (("npm exec magic",), "npm exec magic"),
        (("/usr/sbin/sshd", "-D", "-p", "2222"), "sshd"),
        (("/usr/sbin/sshd", "-D", "-R"), "sshd"),
        (("sshd: root@pts/0",), "sshd"),
        (("postgres: app app 127.0.0.1(40000) idle", "", ""), "postgres"),
        (("/usr/lib/postgresql/15/bin/postgres", "-D", "/tmp/x"), "postgres"),
        (("/venv/bin/python3", "/venv/bin/gunicorn", "-w", "3"), "python gunicorn"),
        (("env", "A=1", "uvx", "mcp-server-fetch@1.2"), "uvx mcp-server-fetch"),
    ],
)
def test_the_program_part_of_a_signature(argv, program):
    assert SIGN.program(argv) == program


@pytest.mark.parametrize(
    "command, expected",
    [
        ("docker run -i --rm -e TOKEN=x --name foo-123 --label a=b ghcr.io/github/github-mcp-server:1.2 stdio",
         "docker run ghcr.io/github/github-mcp-server stdio"),
        ("docker run -i --rm -e GITHUB_PERSONAL_ACCESS_TOKEN ghcr.io/github/github-mcp-server",
         "docker run ghcr.io/github/github-mcp-server"),
        ("/usr/bin/docker run --rm -i -eFOO=1 -v=/a:/b --network=none -m 64m ghcr.io/github/github-mcp-server stdio",
         "docker run ghcr.io/github/github-mcp-server stdio"),
        ("docker run -ite TOKEN=x hashicorp/terraform-mcp-server@sha256:" + "ab" * 32,
         "docker run hashicorp/terraform-mcp-server"),
        ("docker run -i --rm localhost:5000/mcp/debugger:0.3 --port 4711", "docker run localhost:<n>/mcp/debugger --port <n>"),
        ("docker container run -i mcp/fetch", "docker container run mcp/fetch"),
        ("docker create -i --name srv-17 mcp/fetch:latest", "docker create mcp/fetch"),
        ("docker start -ai srv-17", "docker start srv-<n>"),
        ("podman run -i --rm --pod mcp quay.io/acme/server:2 serve", "podman run quay.io/acme/server serve"),
        ("sh -c 'docker run -i --rm --name gh-1 ghcr.io/github/github-mcp-server:1.2 stdio'",
         "sh -c docker run ghcr.io/github/github-mcp-server stdio"),
    ],
)
def test_container_clients_are_signed_by_image_and_command(command, expected):
    assert sign(command) == expected


def test_one_hosts_docker_run_clients_share_a_signature():
    launches = [f"docker run -i --rm --name gh-{i} --label run={i:08x} -e N={i} --cidfile /tmp/c{i} ghcr.io/github/gh:1.{i} stdio"
                for i in range(5)]
    assert len({sign(c) for c in launches}) == 1


@pytest.mark.parametrize(
    "command, action, image, names, attached",
    [
        ("docker run -i --rm --name gh-1 ghcr.io/github/github-mcp-server:1.2 stdio",
         "run", "ghcr.io/github/github-mcp-server:1.2", ("gh-1",), True),
        ("docker run -d --label com.docker.compose.project=x busybox sleep 300", "run", "busybox", (), False),
        ("docker run -dit busybox", "run", "busybox", (), False),
        ("docker run --detach=false -i busybox", "run", "busybox", (), True),
        ("docker container run --name=a -a stdin busybox", "run", "busybox", ("a",), True),
        ("docker create -i --name srv busybox", "create", "busybox", ("srv",), False),
        ("docker start -a -i srv", "start", "", ("srv",), True),
        ("docker start srv other", "start", "", ("srv", "other"), False),
        ("docker -H unix:///run/docker.sock --debug run -i --rm --name gh-2 mcp/fetch", "run", "mcp/fetch", ("gh-2",), True),
        ("docker -DH unix:///run/docker.sock run -i busybox", "run", "busybox", (), True),
        ("docker --context=prod -l warn container create --name srv mcp/fetch", "create", "mcp/fetch", ("srv",), False),
        ("podman --url unix:///run/podman.sock -r start -a srv", "start", "", ("srv",), True),
    ],
)
def test_container_clients_say_what_they_ask_for(command, action, image, names, attached):
    client = SIGN.container_client(shlex.split(command))
    assert (client.action, client.image, client.names, client.attached) == (action, image, names, attached)


def test_a_container_client_given_the_engine_s_own_options_signs_as_without_them():
    assert sign("docker -H ssh://build --tlsverify run -i --rm -e TOKEN=x ghcr.io/github/gh:1.2 stdio") == \
        sign("docker run -i --rm ghcr.io/github/gh:1.2 stdio") == "docker run ghcr.io/github/gh stdio"


@pytest.mark.parametrize("command", ["npx -y @21st-dev/magic", "docker ps -a", "docker", "node server.js", "",
                                     "docker -H unix:///run/docker.sock ps -a", "docker --config run ps"])
def test_other_programs_are_no_container_clients(command):
    assert SIGN.container_client(shlex.split(command)) is None
