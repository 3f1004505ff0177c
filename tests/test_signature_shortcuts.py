"""The Signer's shortcuts change no signature: interpreter names compiled once, launchers
looked for only after a launcher's first word, a mask run only on a word holding one of its
literal starts, a word the masks left as it was remembered, give what fnmatch at each call and
every mask on every word gave; the word cache stays within its bounds, counting what it lets go."""

from __future__ import annotations

import fnmatch

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spawnwatch.bounded import STRING_WEIGHT, UnchangedWords
from spawnwatch.config import load
from spawnwatch.signature import Interpreter, Mask, SignatureRules, Signer

RULES = load().signature


class EveryRuleOnEveryWord(Signer):
    """The reference: fnmatch at each call, every launcher tried, every mask on every word."""

    def _interpreter_of(self, base: str) -> Interpreter | None:
        return next((i for i in self.rules.interpreters if any(fnmatch.fnmatchcase(base, n) for n in i.names)), None)

    def _launcher_of(self, program, args):
        for launcher in self.rules.launchers:
            for sequence in launcher.commands:
                if program != sequence[0]:
                    continue
                words = self._options(launcher.program_value_options, args)[1] if len(sequence) > 1 else args
                if words[: len(sequence) - 1] == list(sequence[1:]):
                    return launcher, sequence, words[len(sequence) - 1 :]
        return None

    def _mask(self, word: str) -> str:
        for pattern, replacement, _ in self._masks:
            word = pattern.sub(replacement, word)
        return word


# What argv open with: interpreters, launchers, wrappers, shells and look-alikes of their names.
COMMANDS = [("node",), ("/usr/bin/node",), ("nodejs",), ("node18",), ("python3",), ("/usr/bin/python3.11",), ("pypy3",),
            ("bun",), ("deno",), ("npx",), ("npm", "exec"), ("npm", "x"), ("pnpm", "dlx"), ("uvx",), ("uv", "tool", "run"),
            ("pipx", "run"), ("docker", "run"), ("docker", "-H", "ssh://h", "run"), ("docker", "start"), ("podman", "create"),
            ("env", "FOO=1", "node"), ("nohup", "npx"), ("sh", "-c"), ("bash", "-c", "npx -y a@1 b"), ("/bin/true",),
            ("gcc",), ("nodex",), ("pythonista",), ("./node",), ("node", "/usr/bin/npm", "exec"), ("npm",), ("docker",),
            ("npm exec magic",), ("",)]
ARGS = ["exec", "x", "run", "-y", "--yes", "--package=@scope/pkg@1.2.3", "--package", "-p", "pkg@latest", "@s/p@2", "--",
        "-m", "http.server", "-c", "echo 1; sleep 2", "-e", "1+1", "-r", "dotenv/config", "server.js", "npx-cli.js", "-i",
        "--rm", "-d", "--name", "web", "image:tag", "/tmp/build-42/main.o", "/var/tmp/x", "/run/user/1000/s.sock",
        "/dev/shm/q", "123e4567-e89b-12d3-a456-426614174000", "deadbeef12", "0xcafe", "8080", "v2", "a1b2c3d4e5",
        "<redacted>", "FOO=1", "-H", "start", "--from", "git+https://x/y", "'quoted arg'", ""]
argv = st.tuples(st.sampled_from(COMMANDS), st.lists(st.sampled_from(ARGS), max_size=7)).map(lambda c: [*c[0], *c[1]])

class FourWords(UnchangedWords):
    KEPT = 4  # evicting all along: a word is masked the same whether it was let go or not


class SmallWordCache(Signer):
    UNMASKED_WORDS = FourWords


shortcut, reference, small = Signer(RULES), EveryRuleOnEveryWord(RULES), SmallWordCache(RULES)


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(argv=argv, comm=st.sampled_from(["", "node", "true"]))
def test_every_signature_program_and_container_client_is_as_before(argv, comm):
    assert shortcut(argv, comm) == reference(argv, comm) == small(argv, comm)
    assert shortcut.program(argv, comm) == reference.program(argv, comm)
    assert shortcut.container_client(argv) == reference.container_client(argv)


def test_user_masks_and_interpreter_names_of_any_kind_sign_as_before():
    rules = SignatureRules(
        interpreters=(Interpreter(("[!a-m]un*", "ru?y", "x[*]"), "run"), Interpreter(("r*", "*"), "any")),  # the first wins
        masks=(Mask("(?i)build-[0-9]+", "<build>"), Mask(r"(/srv)/[^/]+", r"\1/<srv>"), Mask(r"\d{3,}", "<n>")))
    shortcut, reference = Signer(rules), EveryRuleOnEveryWord(rules)
    for argv in (["ruby", "BUILD-12", "/srv/app"], ["nun", "x"], ["x*", "a", "1234"], ["run0", "/SRV/a", "build-9"],
                 ["rake", "x"], ["gcc", "-c"]):
        assert shortcut(argv) == reference(argv) and shortcut.program(argv) == reference.program(argv)


def test_the_word_cache_is_bounded_by_entries_and_weight_and_counts_each_eviction():
    sign = Signer(RULES)
    for n in range(UnchangedWords.KEPT + 100):
        sign(["gcc", f"w{chr(0x4e00 + n)}"])  # no digit: the masks leave it as it is
    assert sign._unmasked_words.evicted == 100
    # Distinct hostile words as long as it keeps: the weight binds before the entries do.
    sign = Signer(RULES)
    longest = "x" * (UnchangedWords.LONGEST - 1)
    for n in range(UnchangedWords.KEPT):
        sign(["gcc", f"{chr(0x4e00 + n)}{longest}"])
    fits = UnchangedWords.BUDGET // (UnchangedWords.LONGEST + STRING_WEIGHT)
    assert fits < UnchangedWords.KEPT and sign._unmasked_words.evicted == UnchangedWords.KEPT - fits
    assert sign._unmasked_words.held <= UnchangedWords.BUDGET
    # Longer words, and words a mask changed, are not kept at all.
    sign = Signer(RULES)
    sign(["gcc", "y" * (UnchangedWords.LONGEST + 1), "/tmp/x", "8080"])
    assert len(sign._unmasked_words) == 0
