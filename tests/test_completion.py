"""Shell completion and the man page: `spawnwatch completion SHELL` prints a script the
shell can load and that completes; the files a package install puts under PREFIX/share
(scripts/make-share.py) are those of the current commands; the man page renders."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, run

SHARE = REPO / "share"
BIN = Path(sys.executable).parent  # the test venv's, where its `spawnwatch` is


def test_the_shipped_man_page_and_completions_are_up_to_date():
    check = run([sys.executable, str(REPO / "scripts" / "make-share.py"), "--check"], timeout=120,
                env={**os.environ, "COLUMNS": "37"})
    assert check.returncode == 0, check.stderr


def test_bash_sources_the_completion_script_and_it_completes_options():
    shell = ("source <(spawnwatch completion bash) && complete -p spawnwatch && "
             "COMP_WORDS=(spawnwatch watch --alertm) COMP_CWORD=2 && _spawnwatch_completion spawnwatch && "
             'echo "completed: ${COMPREPLY[*]}"')
    done = run(["bash", "-c", shell], timeout=120, env={**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"})
    assert done.returncode == 0, done.stderr
    assert "complete -o nosort -F _spawnwatch_completion spawnwatch" in done.stdout
    assert "completed: --alertmanager" in done.stdout


@pytest.mark.parametrize("shell, path", [("bash", "bash-completion/completions/spawnwatch"),
                                         ("zsh", "zsh/site-functions/_spawnwatch"),
                                         ("fish", "fish/vendor_completions.d/spawnwatch.fish")])
def test_the_completion_command_prints_the_shipped_script(shell, path):
    printed = run([str(BIN / "spawnwatch"), "completion", shell], timeout=120)
    assert printed.returncode == 0 and printed.stdout == (SHARE / path).read_text(), printed.stderr


def test_man_renders_the_page_with_every_command():
    page = subprocess.run(["man", "-l", str(SHARE / "man" / "man1" / "spawnwatch.1")], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "MANPAGER": "cat", "MANWIDTH": "100"})
    assert page.returncode == 0 and "warning" not in page.stderr, page.stderr
    for section in ("NAME", "SYNOPSIS", "COMMANDS", "EXIT STATUS"):
        assert f"\n{section}\n" in page.stdout
    for command in ("watch", "trace", "top", "tree", "report", "reap", "doctor", "simulate", "completion"):
        assert f"spawnwatch {command}\n" in page.stdout, command
    # Options are typed as they render: plain hyphens one can copy to a shell.
    assert "--alertmanager URL" in page.stdout and "--bearer-token-file FILE" in page.stdout
