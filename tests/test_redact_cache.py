"""The redactor's shortcuts change nothing: a word remembered unchanged, and a secret shape
searched for only in words holding one of its literal starts, give what searching every shape
in every word gave; the word cache stays within its bounds, counting what it lets go."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spawnwatch.bounded import STRING_WEIGHT, UnchangedWords
from spawnwatch.config import load
from spawnwatch.redact import REDACTED, Pending, Redactor, RedactRules, any_of, literal_starts

RULES = load().redact


class EveryShapeInEveryWord(Redactor):
    """The reference: every shape run on every word, nothing remembered, as before the shortcuts."""

    def __call__(self, argv):
        return self._redact(tuple(argv))

    def _word(self, word: str) -> tuple[str, Pending]:
        for pattern, _ in self._patterns:
            word = pattern.sub(self._replace_match, word)
        return self._names_and_schemes(word)


class SixteenWords(UnchangedWords):
    KEPT = 16  # evicting all along: a word is redacted the same whether it was let go or not


class SmallWordCache(Redactor):
    UNCHANGED_WORDS = SixteenWords


# Secrets of every default shape, the names and schemes that take the next word, and ordinary
# words a build host's command lines share; glued together, they make words with several rules in.
SHAPED = ["ghp_" + "a1" * 10, "github_pat_" + "B2_" * 8, "sk-proj-" + "x" * 20, "sk_live_" + "9" * 20, "xoxb-123-456-abc",
          "xapp-1-" + "A" * 10, "AKIA" + "Z" * 16, "AIza" + "q" * 33, "ya29." + "t" * 24, "glpat-" + "g" * 20,
          "npm_" + "n" * 36, "hf_" + "h" * 34, "dop_v1_" + "f" * 64, "shpat_" + "e" * 32, "dapi" + "0" * 32,
          "SG." + "s" * 16 + "." + "k" * 16, "eyJhbGci.eyJzdWIi.c2ln", "-----BEGIN RSA PRIVATE KEY-----MIIE",
          "hooks.slack.com/services/T0/B0/x", "discordapp.com/api/webhooks/1/a", "https://u:pw@host/x"]
PENDING = ["--token", "-password", "Authorization:", "Bearer", "Basic", "API_KEY=", "--api-key=", "redis-cli", "-a",
           "curl", "-u", "mysql", "-pw", "env", "sudo", "{\"apiKey\":", "?token=", "&"]
ORDINARY = ["/bin/true", "--", "-o", "-I/usr/include", "server", "--package=file:/tmp/x", "gcc", "-c", "main.c", "=",
            ":", " ", "'", '"', "x", "gh", "sk", "do", "://", "eyJ", "-", "AKI", REDACTED]
PIECES = SHAPED + PENDING + ORDINARY
word = st.one_of(st.lists(st.sampled_from(PIECES), min_size=1, max_size=4).map("".join),
                 st.text(alphabet="ghpsk_-xoAKIeyJ:/=. ", max_size=24))
argv = st.lists(word, min_size=1, max_size=8)

reference = EveryShapeInEveryWord(RULES)
shared = Redactor(RULES)  # one for every example: words and argv met before come from its caches
small = SmallWordCache(RULES)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(argv=argv)
def test_the_shortcuts_redact_every_argv_as_searching_every_shape_in_every_word_does(argv):
    expected = reference(argv)
    assert Redactor(RULES)(argv) == expected  # nothing remembered yet
    assert shared(argv) == expected and shared(argv) == expected  # then from its caches
    assert shared.uncached(tuple(argv)) == expected
    assert small(argv) == expected


@pytest.mark.parametrize("user_patterns", [
    (r"(?i)SECRET-[0-9]+",),  # case folded: no literal is sure
    (r"(a)(?:b|\1)c",),  # a backreference after its literal start
    (r"x(?i:Y)z", r"[0-9]{3}-[0-9]{3}"),  # a scoped flag; a class first
    (r"(?x) k e y \d+",),  # verbose: spaces are not in what it matches
    (r"^tok\w+", r"\bpw=\S+"),
])
def test_user_patterns_of_any_kind_redact_as_before(user_patterns):
    rules = RedactRules(patterns=user_patterns)
    words = ["secret-12", "SECRET-9", "abac", "abc", "aac", "xYz", "xyz", "123-456", "key42", "k e y 4", "tokABC",
             "a tokx", "pw=1", "apw=1"]
    shortcut, plain = Redactor(rules), EveryShapeInEveryWord(rules)
    for first in words:
        for second in words:
            assert shortcut([first, second]) == plain([first, second]) == shortcut([first, second])


@pytest.mark.parametrize("rules", [
    RedactRules(keys=("token",), contains=("passwörd",)),  # a hint past ASCII: no word skips the names
    RedactRules(contains=("xσ",), schemes=("Bearer",)),  # a sigma, lowercased by what follows it
    RedactRules(schemes=("Bearer",)),  # no name is a secret's: only schemes are looked for
])
def test_names_are_skipped_only_in_words_that_can_name_no_secret(rules):
    words = ["XΣ=1", "XΣ:", "XΣ.Y=1", "xσ=1", "PASSWÖRD=1", "--passwörd", "v", "--token", "MY_TOKEN=x", "Bearer",
             "Bearer x", "a:b=c", "--x-y=z"]
    shortcut, plain = Redactor(rules), EveryShapeInEveryWord(rules)
    for first in words:
        for second in words:
            assert shortcut([first, second]) == plain([first, second]) == shortcut([first, second])


@given(literals=st.lists(st.text(alphabet="ab.-(", min_size=1, max_size=4), min_size=1, max_size=8),
       text=st.text(alphabet="ab.-(x", max_size=12))
def test_any_of_finds_a_text_holding_one_of_its_literals_and_no_other(literals, text):
    assert (re.search(any_of(literals), text) is not None) == any(literal in text for literal in literals)
    assert all(re.fullmatch(any_of(literals), literal) for literal in literals)


@pytest.mark.parametrize("pattern, starts", [
    ("gh(?<![A-Za-z0-9_]gh)[pousr]_[A-Za-z0-9]{16,}", ("ghp_", "gho_", "ghu_", "ghs_", "ghr_")),
    ("(?:AKIA|ASIA)(?<![A-Z0-9]....)[A-Z0-9]{16}", ("AKIA", "ASIA")),
    ("://[^/\\s:@]*:([^/\\s]+)@", ("://",)),
    ("(ab|c.)d", ("ab", "c")),  # a branch that does not end in literals ends the starts
    ("(a)\\1b", ("a",)),
    ("a(?i:b)c", ("a",)),
    ("(?i)abc", ("",)),
    ("a*b", ("",)),
    ("[a-c]x", ("",)),
    ("[^a]x", ("",)),
    ("(?x) a b", ("ab",)),
    ("^ab", ("ab",)),
    ("(?=q)qr", ("qr",)),
    ("x" * 40 + "y", ("x" * 32,)),  # past MAX_START_CHARS, a prefix of it
    # Past MAX_STARTS (16) combinations, the shorter starts.
    ("[ab][cd][ef][gh][ij]", tuple(a + b + c + d for a in "ab" for b in "cd" for c in "ef" for d in "gh")),
])
def test_literal_starts_are_read_from_the_parsed_pattern(pattern, starts):
    assert literal_starts(re.compile(pattern)) == starts


REGEX_PIECES = ["a", "b", "ab", "[ab]", "[a-c]", "[^a]", ".", "a*", "b+", "a?", "(a|b)", "(?:ab|c)", "(a)", "(b|)", "\\1",
                "(?i)", "(?i:a)", "(?-i:B)", "(?=a)", "(?!b)", "(?<=a)", "(?<!b)", "^", "$", "\\b", "a{0,2}", "(?:a|b.)",
                "\\w", "A", "B"]


@settings(max_examples=600, deadline=None)
@given(pieces=st.lists(st.sampled_from(REGEX_PIECES), min_size=1, max_size=5),
       texts=st.lists(st.text(alphabet="abcAB", max_size=8), min_size=1, max_size=20))
def test_a_word_with_a_match_of_any_pattern_holds_one_of_its_literal_starts(pieces, texts):
    try:
        pattern = re.compile("".join(pieces))
    except re.error:  # a bad backreference, a global flag not first, a variable lookbehind
        return
    starts = literal_starts(pattern)
    for text in texts:
        if pattern.search(text) is not None:
            assert any(start in text for start in starts), (pattern.pattern, starts, text)


def test_the_word_cache_is_bounded_by_entries_and_weight_and_counts_each_eviction():
    redact = Redactor(RULES)
    # Distinct ordinary words, more than it keeps: it keeps KEPT of them.
    for n in range(UnchangedWords.KEPT + 100):
        redact([f"w{n}"])
    assert redact.words_evicted == 100
    # Distinct hostile words as long as it keeps: the weight binds before the entries do.
    redact = Redactor(RULES)
    longest = "x" * (UnchangedWords.LONGEST - 8)
    for n in range(UnchangedWords.KEPT):
        redact([f"{n:08d}{longest}"])
    fits = UnchangedWords.BUDGET // (UnchangedWords.LONGEST + STRING_WEIGHT)
    assert fits < UnchangedWords.KEPT and redact.words_evicted == UnchangedWords.KEPT - fits
    assert redact._unchanged_words.held <= UnchangedWords.BUDGET
    # Longer words, and words a rule changed, are not kept at all.
    redact = Redactor(RULES)
    redact(["y" * (UnchangedWords.LONGEST + 1), "ghp_" + "a" * 20, "--token=x"])
    assert len(redact._unchanged_words) == 0


def test_a_remembered_word_keeps_what_it_leaves_for_the_next():
    redact = Redactor(RULES)
    assert redact(["--token", "a"]) == ("--token", REDACTED)
    assert redact(["--token", "b", "c"]) == ("--token", REDACTED, "c")  # `--token` from the cache
    assert redact(["Authorization:", "token", "x"]) == redact(["Authorization:", "token", "y"]) == (
        "Authorization:", REDACTED, REDACTED)
