"""argv -> signature: the name under which identical children are grouped.

A signature keeps what makes a child "the same program" and drops what varies
between two launches of it.  All of these are `npm exec magic`:

    node /usr/bin/npm exec --yes --package=@21st-dev/magic@0.2.3 -- magic
    npm exec @21st-dev/magic@latest
    npx -y @21st-dev/magic
    npm exec magic                      (npm's process title, as /proc shows it)

The npm scope is dropped because npm's process title (all a /proc snapshot can
see) keeps only the positional arguments: `--package=@21st-dev/magic -- magic`
shows as `npm exec magic`, and a snapshot-seeded child must land in the same
group as one seen live.

Steps: clean the argv (split process titles), strip wrappers (`env`, `nohup`),
strip interpreters (`node /usr/bin/npm` -> `npm`, `python3 -m x` -> `python -m
x`), apply a launcher rule (npm exec/npx, uvx, pipx run: flags and versions
dropped; `docker run`: run flags, names, labels and env dropped, the image
without its tag), render `sh -c CMD` with CMD's own signature, then mask volatile
tokens (UUIDs, temp paths, hex ids, numbers).  Every rule is data
(`SignatureRules`, loaded from the config's [signature] table).
"""

from __future__ import annotations

import fnmatch
import re
import shlex
from dataclasses import dataclass
from typing import Sequence

from spawnwatch.bounded import UnchangedWords
from spawnwatch.redact import REDACTED, literal_starts
from spawnwatch.text import ELLIPSIS, cut


@dataclass(frozen=True, slots=True)
class Interpreter:
    """A runtime whose first non-option argument is the real program."""

    names: tuple[str, ...]  # fnmatch patterns on the executable's basename: "python3*"
    display: str  # how it is written in signatures: "python"
    value_options: frozenset[str] = frozenset()  # options that take the next word: -X, -r
    program_options: frozenset[str] = frozenset()  # the next word is the program: -m, -c, -e


@dataclass(frozen=True, slots=True)
class Launcher:
    """A package runner (`npx -y pkg`) or a container engine's client (`docker run -i
    IMAGE`): the signature names the package, bin or image it runs."""

    display: str  # "npm exec"; "{command}" stands for the command words as invoked ("docker run")
    commands: tuple[tuple[str, ...], ...]  # word sequences that invoke it: ("npx",), ("npm", "exec")
    package_options: frozenset[str] = frozenset()  # name the package: --package, -p, --from
    value_options: frozenset[str] = frozenset()  # other options taking the next word
    # Options of the program itself that take the next word, given before a command of
    # several words (`docker -H ssh://host run`, `podman --url URL run`); its flags there
    # are passed over too.
    program_value_options: frozenset[str] = frozenset()
    version: str = ""  # regex of a version suffix to strip from the package/bin name
    drop_scope: bool = False  # "@scope/name" -> "name"
    # The commands end in run, create or start and ask a container engine for containers
    # with docker's CLI options (-d/--detach, --name, -a/--attach, -i/--interactive).
    container_client: bool = False

    @property
    def options_taking_values(self) -> frozenset[str]:
        """Its own options (after the command words) that take a value."""
        return self.package_options | self.value_options


@dataclass(frozen=True, slots=True)
class ContainerClient:
    """What a container engine's client asks for, as its argv tells."""

    action: str  # "run", "create" or "start"
    image: str  # as given ("" for start)
    names: tuple[str, ...]  # --name of run and create; the containers (names or ids) start names
    attached: bool  # stays attached to the container's stdio: run without -d, start with -a or -i
    # The address of the engine it talks to, as its argv and environment tell (docker's
    # precedence: -H, then --context, then DOCKER_HOST, then DOCKER_CONTEXT); None when they
    # cannot tell (a named context, an environment that could not be read).
    engine: str | None = None
    labels: frozenset[str] = frozenset()  # --label of run and create, as NAME=value


@dataclass(frozen=True, slots=True)
class Mask:
    pattern: str
    replacement: str


@dataclass(frozen=True, slots=True)
class SignatureRules:
    wrappers: frozenset[str] = frozenset()  # run the rest of argv: env, nohup, setsid
    shells: frozenset[str] = frozenset()  # `<shell> -c CMD` is signed as `<shell> -c <signature of CMD>`
    interpreters: tuple[Interpreter, ...] = ()
    launchers: tuple[Launcher, ...] = ()
    masks: tuple[Mask, ...] = ()
    max_args: int = 8
    max_length: int = 160


_WHITESPACE = re.compile(r"\s+")
_ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_SCRIPT_SUFFIX = re.compile(r"(-cli)?\.(c|m)?js$|\.py$")


class Signer:
    """Compiled `SignatureRules`; `signer(argv, comm)` gives the signature."""

    UNMASKED_WORDS = UnchangedWords  # words the masks leave as they are: masked once

    def __init__(self, rules: SignatureRules) -> None:
        self.rules = rules
        self._unmasked_words: UnchangedWords[bool] = self.UNMASKED_WORDS()
        # Each mask with its literal starts (redact.literal_starts): most words hold none.
        self._masks = [(pattern := re.compile(m.pattern), m.replacement, literal_starts(pattern)) for m in rules.masks]
        # Every interpreter's name in one regex, compiled once (fnmatch.fnmatchcase compiles each at each
        # call), a named group each: branches are tried in order, so the first name that matches wins.
        # A translated name is whole in itself (`(?s:...)\Z`, no group of its own): joining changes none.
        names = [(fnmatch.translate(name), interpreter) for interpreter in rules.interpreters for name in interpreter.names]
        self._interpreter_name = re.compile("|".join(f"(?P<_{i}>{translated})" for i, (translated, _) in enumerate(names)))
        self._interpreter_by_group = {f"_{i}": interpreter for i, (_, interpreter) in enumerate(names)}
        self._versions = {l: re.compile(l.version) if l.version else None for l in rules.launchers}
        self._launcher_words = {seq[0] for l in rules.launchers for seq in l.commands}

    @property
    def words_evicted(self) -> int:
        """Unmasked words the word cache let go past its limits."""
        return self._unmasked_words.evicted

    def __call__(self, argv: Sequence[str], comm: str = "") -> str:
        words = self._strip_wrappers(clean_argv(argv))
        if not words:
            return f"[{comm}]" if comm else "[?]"
        return self._bound(self._sign(words))

    def program(self, argv: Sequence[str], comm: str = "") -> str:
        """The program part of the signature: what runs, without its arguments.

        `node host.js` and `node server.js` are two programs, `npx -y @21st-dev/magic`
        and `npm exec magic` one (`npm exec magic`), `/usr/sbin/sshd -D` and `sshd -R`
        one (`sshd`).  A process title `name: what it does` (postgres backends,
        `sshd: root@pts/0`, `nginx: worker process`) runs `name`."""
        words = self._strip_wrappers(clean_argv(argv))
        if words and words[0].endswith(":") and len(words[0]) > 1:
            words = [words[0][:-1], *words[1:]]
        if not words:
            return f"[{comm}]" if comm else "[?]"
        return self._bound(self._split(words)[0])

    def container_client(self, argv: Sequence[str], environ: Sequence[str] | None = ()) -> ContainerClient | None:
        """What a `docker run` / `docker create` / `docker start` client asks for, and of which
        engine (`environ`: its DOCKER_HOST / DOCKER_CONTEXT as NAME=value, None when it could
        not be read); None for other programs."""
        words = self._strip_wrappers(clean_argv(argv))
        if not words:
            return None
        program, program_args = self._program(words)
        launch = self._launcher_of(program, program_args)
        if launch is None or not launch[0].container_client:
            return None
        launcher, sequence, args = launch
        engine = _engine(sequence[0], self._options(launcher.program_value_options, program_args)[0], environ)
        options, rest = self._options(launcher.options_taking_values, args)
        action = sequence[-1]
        if action == "start":
            attached = any(name in ("-a", "--attach", "-i", "--interactive") and _true(value) for name, value in options)
            return ContainerClient(action, "", tuple(rest), attached, engine)
        names = tuple(value for name, value in options if name == "--name" and value)
        detached = any(name in ("-d", "--detach") and _true(value) for name, value in options)
        labels = frozenset(value if "=" in value else f"{value}=" for name, value in options
                           if name in ("-l", "--label") and value and REDACTED not in value)  # redacted: unknown
        return ContainerClient(action, rest[0] if rest else "", names, action == "run" and not detached, engine, labels)

    def _sign(self, words: list[str]) -> str:
        return self._render(*self._split(words))

    def _split(self, words: list[str]) -> tuple[str, list[str]]:
        """(program as written in the signature, the arguments the signature keeps)."""
        program, args = self._program(words)
        launch = self._launcher_of(program, args)
        if launch is not None:
            return self._launch(*launch)
        if program in self.rules.shells and args[:1] == ["-c"] and len(args) > 1:
            return f"{program} -c {self._sign_command(args[1])}", []
        return program, args

    def _launcher_of(self, program: str, args: list[str]) -> tuple[Launcher, tuple[str, ...], list[str]] | None:
        """(the launcher, the command words that invoked it, the arguments after them)."""
        if program not in self._launcher_words:  # most programs: no launcher's first word
            return None
        for launcher in self.rules.launchers:
            for sequence in launcher.commands:
                if program != sequence[0]:
                    continue
                words = self._options(launcher.program_value_options, args)[1] if len(sequence) > 1 else args
                if words[: len(sequence) - 1] == list(sequence[1:]):
                    return launcher, sequence, words[len(sequence) - 1 :]
        return None

    def _strip_wrappers(self, words: list[str]) -> list[str]:
        while words and words[0].rpartition("/")[2] in self.rules.wrappers:
            words = words[1:]
            while words and (words[0].startswith("-") or _ENV_ASSIGNMENT.match(words[0])):
                words = words[1:]
        return words

    def _program(self, words: list[str]) -> tuple[str, list[str]]:
        """(program as written in the signature, its arguments), interpreters stripped."""
        interpreter = self._interpreter_of(words[0].rpartition("/")[2])
        if interpreter is None:
            return self._tool(words[0]), words[1:]
        i = 1
        while i < len(words) and words[i].startswith("-") and words[i] != "-":
            option = words[i]
            if option in interpreter.program_options and i + 1 < len(words):
                return f"{interpreter.display} {option} {words[i + 1]}", words[i + 2 :]
            i += 2 if option in interpreter.value_options else 1
        if i >= len(words):
            return interpreter.display, []
        tool = self._tool(words[i])
        if tool in self._launcher_words:
            return tool, words[i + 1 :]  # `node /usr/bin/npm ...` is just npm
        return f"{interpreter.display} {tool}", words[i + 1 :]

    def _interpreter_of(self, base: str) -> Interpreter | None:
        """The first interpreter one of whose names matches the executable's basename."""
        if not self._interpreter_by_group:
            return None
        match = self._interpreter_name.match(base)
        return self._interpreter_by_group[match.lastgroup] if match else None

    def _tool(self, path: str) -> str:
        """A program by its basename; `npm-cli.js` is `npm` when npm is a launcher."""
        base = path.rpartition("/")[2] or path  # os.path.basename, without its call
        if "." not in base:  # every script suffix has one
            return base
        bare = _SCRIPT_SUFFIX.sub("", base)
        return bare if bare in self._launcher_words else base

    def _launch(self, launcher: Launcher, sequence: tuple[str, ...], args: list[str]) -> tuple[str, list[str]]:
        """`npx -y pkg@1 a b` -> (`npm exec pkg`, [a, b]): launcher options before the program are dropped."""
        display = launcher.display.replace("{command}", " ".join(sequence))
        options, rest = self._options(launcher.options_taking_values, args)
        packages = [value for name, value in options if name in launcher.package_options]
        if rest:
            program, args_out = rest[0], rest[1:]
        elif packages:
            program, args_out = packages[-1], []
        else:
            return display, []
        return f"{display} {self._package_name(launcher, program)}", args_out

    @staticmethod
    def _options(takes_value: frozenset[str], args: list[str]) -> tuple[list[tuple[str, str]], list[str]]:
        """(the options that open `args` as (name, value), the words after them); `takes_value`
        names those that take one.  A value is "" for a flag; `-abc` is three one-letter
        options, the first that takes a value ends it (`-e=X`, `-eX`, `-e X`: docker's and
        getopt's rules)."""
        options: list[tuple[str, str]] = []
        i = 0
        while i < len(args):
            word = args[i]
            if word == "--":
                return options, args[i + 1 :]
            if not word.startswith("-") or word == "-":
                return options, args[i:]
            name, has_value, value = word.partition("=")
            if word.startswith("--") or name in takes_value or len(name) == 2:
                if name in takes_value and not has_value and i + 1 < len(args):
                    i += 1
                    value = args[i]
                options.append((name, value))
            else:
                for k in range(1, len(word)):
                    letter = "-" + word[k]
                    if letter in takes_value:
                        value = word[k + 1 :].removeprefix("=")
                        if not value and i + 1 < len(args):
                            i += 1
                            value = args[i]
                        options.append((letter, value))
                        break
                    options.append((letter, ""))
            i += 1
        return options, []

    def _package_name(self, launcher: Launcher, spec: str) -> str:
        version = self._versions[launcher]
        if version is not None:
            spec = version.sub("", spec) or spec
        if launcher.drop_scope and spec.startswith("@") and "/" in spec:
            spec = spec.split("/", 1)[1]
        return self._mask(spec)

    def _sign_command(self, command: str) -> str:
        try:
            words = shlex.split(command)
        except ValueError:  # unbalanced quotes: sign it word by word anyway
            words = command.split()
        words = self._strip_wrappers(words)
        return self._sign(words) if words else "''"

    def _render(self, program: str, args: list[str]) -> str:
        shown = [self._mask(a) for a in args[: self.rules.max_args]]
        if len(args) > self.rules.max_args:
            shown.append(ELLIPSIS)
        return " ".join([program, *shown])

    def _mask(self, word: str) -> str:
        if self._unmasked_words.recent(word):
            return word
        masked = self._masks_applied(word)
        self._unmasked_words.keep(word, masked, True)
        return masked

    def _masks_applied(self, word: str) -> str:
        for pattern, replacement, starts in self._masks:
            for start in starts:
                if start in word:  # the word as the masks before left it
                    word = pattern.sub(replacement, word)
                    break
        return word

    def _bound(self, signature: str) -> str:
        signature = _WHITESPACE.sub(" ", signature).strip()  # one line, whatever argv held
        return cut(signature, self.rules.max_length)


ENGINE_VARIABLES = ("DOCKER_HOST", "DOCKER_CONTEXT")  # what of a client's environment names its engine
DEFAULT_ENGINE = "unix:///var/run/docker.sock"  # docker's, when neither -H nor DOCKER_HOST names another
PODMAN_ENGINE = "podman"  # podman's engine, whatever its --url or --connection: never docker's
# The programs (by comm: the name of the file an exec ran) whose environment is read at
# their exec, for ENGINE_VARIABLES; podman's engine is never docker's, whatever its
# environment says.
ENGINE_CLIENTS = frozenset({"docker"})


def _engine(program: str, options: list[tuple[str, str]], environ: Sequence[str] | None) -> str | None:
    """The address of the engine a client talks to (ContainerClient.engine), from its own
    options before the command words and its environment; the last of an option given
    twice wins."""
    if program != "docker":
        return PODMAN_ENGINE
    host = next((value for name, value in reversed(options) if name in ("-H", "--host")), None)
    context = next((value for name, value in reversed(options) if name in ("-c", "--context")), None)
    if host is None and context in (None, "default"):  # the default context is DOCKER_HOST's engine
        if environ is None:
            return None
        variables = dict(entry.partition("=")[::2] for entry in environ)
        host = variables.get("DOCKER_HOST") or None
        context = context or variables.get("DOCKER_CONTEXT") or None
    if host is not None:
        return host
    return DEFAULT_ENGINE if context in (None, "default") else None  # a named context's address is in its owner's files


def _true(value: str) -> bool:
    """A flag given bare (`-d`) or set true (`--detach=true`)."""
    return value.lower() not in ("false", "0")


def clean_argv(argv: Sequence[str]) -> list[str]:
    """argv without empty words; a rewritten process title (`npm exec magic` as one word,
    padded with empty ones) is split back into words."""
    words = [w for w in argv if w]
    if len(words) == 1 and " " in words[0]:
        return words[0].split()
    return words
