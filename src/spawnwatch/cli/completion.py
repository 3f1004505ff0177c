"""`spawnwatch completion SHELL`: the shell's completion script, from click's own."""

from __future__ import annotations

import click
from click.shell_completion import get_completion_class

PROG_NAME = "spawnwatch"
COMPLETE_VAR = "_SPAWNWATCH_COMPLETE"  # what click reads when the shell asks for completions
SHELLS = ("bash", "zsh", "fish")


def completion_script(shell: str) -> str:
    from spawnwatch.cli import main

    completion = get_completion_class(shell)
    assert completion is not None, shell  # SHELLS are click's own
    return completion(main, {}, PROG_NAME, COMPLETE_VAR).source()


@click.command("completion")
@click.argument("shell", type=click.Choice(SHELLS))
def command(shell: str) -> None:
    """Print the completion script of SHELL for spawnwatch.

    A pip install also puts them in PREFIX/share: bash-completion/completions/spawnwatch,
    zsh/site-functions/_spawnwatch and fish/vendor_completions.d/spawnwatch.fish.

    \b
    Examples:
      source <(spawnwatch completion bash)                  in ~/.bashrc
      spawnwatch completion zsh > ~/.zfunc/_spawnwatch      with ~/.zfunc on fpath
      spawnwatch completion fish > ~/.config/fish/completions/spawnwatch.fish
    """
    click.echo(completion_script(shell), nl=False)
