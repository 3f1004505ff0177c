"""Secrets out of argv, once, where argv enters spawnwatch.

MCP servers are started with keys in their argv (`--api-key=...`, `API_KEY="..."`,
`--token xoxb-...`, `Authorization: Bearer ...`).  The probe (every exec's argv)
and the /proc snapshot run argv through a `Redactor` before anything else sees
it, so lineage, signatures, alerts and every sink and recording carry only the
redacted argv; two launches that differ only in their secrets get one signature.

Each word is searched for, in this order:

- secret shapes (`RedactRules.patterns`, regexes such as `ghp_...`, `AKIA...`,
  JWTs, URL userinfo): a match is replaced, or only its groups when it has some;
- assignments to a secret name, anywhere in a word: `API_KEY=v`, `--api-key=v`,
  `?token=v&`, `{"apiKey": "v"}`, `Authorization: Bearer v` (the scheme stays);
- options named like a secret and their value: `--token v`, `-password v`
  (one or two dashes, a name of two letters or more; a value that starts with
  `-` is the next option, not a value);
- an authorization scheme and its credential: `Bearer v`, `Basic v`.

A name is a secret's when its segments (split at `-`, `_`, `.` and camelCase)
contain one of `RedactRules.keys` as a run: with the key `token`, `--x-token`,
`GITHUB_TOKEN` and `authToken` are secret names, `--tokenizer` is not; the key
`api_key` matches `--x-api-key`, `API_KEY` and `apiKey`.  What an option, a
header name or a scheme ends a word with, the next word holds: `["--token",
"v"]` and `["-H", "Authorization:", "Bearer", "v"]` are redacted too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Sequence

from spawnwatch.events import Event, Exec, Snapshot, replaced

Argv = tuple[str, ...]
REDACTED = "<redacted>"


@dataclass(frozen=True, slots=True)
class RedactRules:
    """The config's [redact] table; empty rules redact nothing (`--show-secrets`)."""

    keys: tuple[str, ...] = ()  # name segments that mark a secret: "token", "api_key"
    schemes: tuple[str, ...] = ()  # authorization schemes whose next word is a credential: "Bearer"
    patterns: tuple[str, ...] = ()  # regexes of secrets anywhere in a word; with groups, only the groups


_SEPARATORS = re.compile(r"[-_.]+")
_CAMEL = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")
# A name followed by `=` (nothing between) or by `:` (spaces around allowed: header style).
_ASSIGNMENT = re.compile(r"""(?P<name>[A-Za-z_][\w.-]*)["']?(?:=|[ \t]*:[ \t]*)""")
_OPTION = re.compile(r"(?<!\S)--?(?P<name>[A-Za-z][\w.-]+)(?=[ \t]|$)")
# A value ends at whitespace or at what closes it in a URL query, a JSON object or a list.
_VALUE = re.compile(r""""[^"]*"?|'[^']*'?|[^\s"',;&}\]]+""")
_SPACE = re.compile(r"[ \t]+")


def segments(name: str) -> tuple[str, ...]:
    """`--x-api-key` -> ('x', 'api', 'key'); `authToken` -> ('auth', 'token')."""
    return tuple(s.lower() for part in _SEPARATORS.split(name) for s in _CAMEL.findall(part))


class Redactor:
    """Compiled `RedactRules`; `redactor(argv)` is argv with each secret replaced."""

    CACHE_SIZE = 1024  # distinct argv remembered: a shell loop execs the same one again and again

    def __init__(self, rules: RedactRules) -> None:
        self._keys = tuple(filter(None, (segments(k) for k in rules.keys)))
        self._patterns = tuple(re.compile(p) for p in rules.patterns)
        schemes = "|".join(re.escape(s) for s in rules.schemes)
        # A scheme, then its credential (`value`) or the end of the word (the credential is the next one).
        self._scheme = re.compile(rf"\b(?:{schemes})(?:[ \t]+(?=(?P<value>\S))|$)", re.IGNORECASE) if schemes else None
        self._cached = lru_cache(maxsize=self.CACHE_SIZE)(self._redact)

    def __call__(self, argv: Sequence[str]) -> Argv:
        argv = tuple(argv)
        if not (self._keys or self._patterns or self._scheme):
            return argv
        return self._cached(argv)

    def event(self, item: Event | Snapshot) -> Event | Snapshot:
        """An exec with its argv redacted, a snapshot with every process's; other events as they are."""
        if isinstance(item, Exec):
            return replaced(item, argv=self(item.argv))
        if isinstance(item, Snapshot):
            return replace(item, processes=tuple(replace(p, argv=self(p.argv)) for p in item.processes))
        return item

    def _is_secret_name(self, name: str) -> bool:
        found = segments(name)
        return any(found[i : i + len(key)] == key for key in self._keys for i in range(len(found) - len(key) + 1))

    def _redact(self, argv: Argv) -> Argv:
        words = []
        value_next = False  # the previous word ended with an option, a header name or a scheme
        for word in argv:
            scheme_alone = False
            start = len(word) - len(word.lstrip())
            if value_next and (not word.startswith("-", start) or word[start:] == "-"):  # `-v`: the next option
                word, _, scheme_alone = self._redact_value(word, start)
            word, value_next = self._word(word)  # what follows the value may hold secrets too
            value_next = value_next or scheme_alone
            words.append(word)
        return tuple(words)

    def _word(self, word: str) -> tuple[str, bool]:
        """The word redacted, and whether its last secret name or scheme waits for the next word."""
        for pattern in self._patterns:
            word = pattern.sub(self._replace_match, word)
        word, assigned = self._assignments(word)
        word, option = self._options(word)
        word, scheme = self._schemes(word)
        return word, assigned or option or scheme

    def _replace_match(self, match: re.Match[str]) -> str:
        if not match.re.groups:
            return REDACTED
        text, start = match.group(0), match.start()
        spans = sorted(match.span(g) for g in range(1, match.re.groups + 1) if match.start(g) >= 0)
        out, at = [], 0
        for left, right in spans:
            left, right = max(left - start, at), right - start
            if right > left:
                out += [text[at:left], REDACTED]
                at = right
        return "".join(out) + text[at:]

    def _assignments(self, word: str) -> tuple[str, bool]:
        pending = False
        at = 0
        while match := _ASSIGNMENT.search(word, at):
            at = match.end()
            if not self._is_secret_name(match.group("name")):
                continue
            if at == len(word):
                pending = match.group(0).rstrip().endswith(":")  # `Authorization:` then the value
                break
            word, at, pending = self._redact_value(word, at)
        return word, pending

    def _options(self, word: str) -> tuple[str, bool]:
        """`--token v` inside one word (a shell command, a process title); at its end, v is the next word."""
        pending = False
        at = 0
        while match := _OPTION.search(word, at):
            at = match.end()
            pending = False
            if not self._is_secret_name(match.group("name")):
                continue
            space = _SPACE.match(word, at)
            if space is None:
                pending = True  # the option ends the word
                break
            if word.startswith("-", space.end()):
                continue  # a flag: the next option follows
            word, at, pending = self._redact_value(word, space.end())
        return word, pending

    def _schemes(self, word: str) -> tuple[str, bool]:
        if self._scheme is None:
            return word, False
        at = 0
        while match := self._scheme.search(word, at):
            if match.start("value") < 0:
                return word, True
            word, at, _ = self._redact_value(word, match.start("value"))
        return word, False

    def _redact_value(self, word: str, at: int) -> tuple[str, int, bool]:
        """`word` with the value starting at `at` replaced (quotes kept), where to go on, and whether
        a scheme at the end left the credential to the next word."""
        if self._scheme is not None:
            match = self._scheme.match(word, at)
            if match is not None:
                if match.start("value") < 0:
                    return word, len(word), True
                at = match.start("value")
        if word.startswith(REDACTED, at):  # a shape's match, in a URL's userinfo say: what follows is no value
            return word, at + len(REDACTED), False
        value = _VALUE.match(word, at)
        if value is None:
            return word, at, False
        text = value.group(0)
        replacement = REDACTED
        if text[0] in "\"'":  # quotes stay, also an unclosed one (a cut argv)
            replacement = text[0] + replacement + (text[0] if len(text) > 1 and text.endswith(text[0]) else "")
        return word[:at] + replacement + word[value.end() :], at + len(replacement), False
