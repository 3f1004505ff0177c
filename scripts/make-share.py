#!/usr/bin/env python3
"""Write the files a package install puts under PREFIX/share (pyproject's data-files):
the man page, from the commands' --help, and the shell completion scripts, from click.
Run it after changing a command or an option (a test fails until it is run):

    .venv/bin/python scripts/make-share.py           # rewrite share/
    .venv/bin/python scripts/make-share.py --check   # exit 1 when share/ is out of date
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import click

from spawnwatch import __version__
from spawnwatch.cli import main
from spawnwatch.cli.completion import PROG_NAME, completion_script

SHARE = Path(__file__).resolve().parents[1] / "share"
COMPLETIONS = {
    "bash": "bash-completion/completions/spawnwatch",
    "zsh": "zsh/site-functions/_spawnwatch",
    "fish": "fish/vendor_completions.d/spawnwatch.fish",
}
MAN_PAGE = "man/man1/spawnwatch.1"
WIDTH = 80  # of the help text, whatever terminal runs this


def roff(text: str) -> str:
    """`text` as literal lines of roff: backslashes and hyphens escaped, no line read as a request."""
    lines = []
    for line in text.replace("\\", "\\e").replace("-", "\\-").splitlines():
        lines.append("\\&" + line if line.startswith((".", "'")) else line)
    return "\n".join(lines)


def help_of(command: click.Command, name: str, parent: click.Context | None = None) -> str:
    context = click.Context(command, info_name=name, parent=parent, terminal_width=WIDTH, max_content_width=WIDTH,
                            **main.context_settings)
    return context.get_help()


def man_page() -> str:
    top = click.Context(main, info_name=PROG_NAME, **main.context_settings)
    summary = (main.help or "").strip().splitlines()[0].rstrip(".")
    parts = [
        f'.TH SPAWNWATCH 1 "" "spawnwatch {__version__}" "User Commands"',
        ".SH NAME", f"spawnwatch \\- {roff(summary[0].lower() + summary[1:])}",
        ".SH SYNOPSIS", ".B spawnwatch", "[OPTIONS] COMMAND [ARGS]...",
        ".SH DESCRIPTION", ".nf", roff(help_of(main, PROG_NAME)), ".fi",
        ".SH COMMANDS",
    ]
    for name in main.list_commands(top):
        command = main.get_command(top, name)
        assert command is not None, name
        parts += [f".SS spawnwatch {name}", ".nf", roff(help_of(command, name, top)), ".fi"]
    exit_status = sys.modules["spawnwatch.cli"].__doc__.split("Exit codes (every subcommand):\n", 1)[1]
    parts += [".SH EXIT STATUS", ".nf", roff(exit_status.strip("\n")), ".fi",
              ".SH SEE ALSO", "README.md of the project, and each command's \\-\\-help."]
    return "\n".join(parts) + "\n"


def wanted() -> dict[Path, str]:
    files = {SHARE / MAN_PAGE: man_page()}
    files.update({SHARE / path: completion_script(shell) for shell, path in COMPLETIONS.items()})
    return files


def run() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 when a file is out of date")
    args = parser.parse_args()
    stale = [path for path, text in wanted().items() if not path.is_file() or path.read_text() != text]
    if args.check:
        for path in stale:
            print(f"{path.relative_to(SHARE.parent)} is out of date: run scripts/make-share.py", file=sys.stderr)
        return 1 if stale else 0
    for path, text in wanted().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(run())
