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
  `?token=v&`, `{"apiKey": "v"}`, `SSHPASS=v`; a header named like one of
  `RedactRules.headers` (`Authorization: <scheme> <credential...>`, any scheme)
  loses everything after its scheme, up to the end of the word or a quote;
- options named like a secret and their value: `--token v`, `-password v`
  (one or two dashes, a name of two letters or more; a value that starts with
  `-` is the next option, not a value);
- an authorization scheme and its credential: `Bearer v`, `Basic v`.

Across words, a program's own options (`RedactRules.options`: `redis-cli -a v`,
`curl -u user:pw`, `mysql -pv`) take their value, next or glued, after a word
naming the program (`/usr/bin/redis-cli`, also behind `sudo` or `env`).

A name is a secret's when its segments (split at `-`, `_`, `.` and camelCase)
contain one of `RedactRules.keys` as a run, or when it contains one of
`RedactRules.contains` whatever its separators: with the key `token`,
`--x-token`, `GITHUB_TOKEN` and `authToken` are secret names, `--tokenizer` is
not; `password` in `contains` makes `DBPASSWORD` one.  What an option, a header
name or a scheme ends a word with, the next word holds: `["--token", "v"]` and
`["-H", "Authorization:", "Bearer", "v"]` are redacted too.

Cost: linear in the size of argv.  Every regex here starts only where a name, an
option or a scheme can start (a lookbehind says so), so no search restarts inside
a run it already failed on, and a word is rebuilt once from its pieces, not once
a secret.  Patterns from the config must keep to that too (`bench/redact.py`).
A build host's distinct command lines share most of their words: a word that comes
out unchanged is remembered (bounded, evictions counted), and a shape is searched
for only in a word holding one of its literal starts (`literal_starts`), and names only in a
word holding what a secret's name holds (a distinct word, most often, holds neither).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Iterable, Sequence

from spawnwatch.bounded import RecentWeighedMap, UnchangedWords, weigh_words
from spawnwatch.events import Event, Exec, Snapshot, replaced

try:  # the parser `re.compile` runs itself: what it reads a pattern as is what the pattern matches
    from re import _constants as _regex_ops
    from re import _parser as _regex_parser
except ImportError:  # Python 3.10
    import sre_constants as _regex_ops
    import sre_parse as _regex_parser

Argv = tuple[str, ...]
REDACTED = "<redacted>"


@dataclass(frozen=True, slots=True)
class RedactRules:
    """The config's [redact] table; empty rules redact nothing (`--show-secrets`)."""

    keys: tuple[str, ...] = ()  # name segments that mark a secret: "token", "api_key"
    contains: tuple[str, ...] = ()  # what a name holds, separators aside, to be a secret's: "password"
    headers: tuple[str, ...] = ()  # header names whose whole value after a scheme is a credential
    schemes: tuple[str, ...] = ()  # authorization schemes whose next word is a credential: "Bearer"
    options: tuple[str, ...] = ()  # "program -option": the option's value, next or glued, is a secret
    patterns: tuple[str, ...] = ()  # regexes of secrets anywhere in a word; with groups, only the groups


class Pending(enum.Enum):
    """What the end of a word left for the next one."""

    NOTHING = enum.auto()
    VALUE = enum.auto()  # `--token`, `Bearer`: the next word is the value
    HEADER = enum.auto()  # `Authorization:`: the next word is the header's value, scheme first


_SEPARATOR_CHARS = "-_."  # between a name's segments
_SEPARATORS = re.compile(f"[{re.escape(_SEPARATOR_CHARS)}]+")
_CAMEL = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")
# A name followed by `=` (nothing between) or by `:` (spaces around allowed: header style).  It starts
# where no name character precedes it: a search does not try again from inside a name that failed.
_ASSIGNMENT = re.compile(r"""(?<![\w.-])-*(?P<name>[A-Za-z_][\w.-]*)["']?(?P<sign>=|[ \t]*:[ \t]*)""")
_OPTION = re.compile(r"-(?<!\S-)-?(?P<name>[A-Za-z][\w.-]+)(?=[ \t]|$)")  # its dash first: the search skips to it
# A value ends at whitespace or at what closes it in a URL query, a JSON object or a list.
_VALUE = re.compile(r""""[^"]*"?|'[^']*'?|[^\s"',;&}\]]+""")
_SPACE = re.compile(r"[ \t]+")
# A header's value runs to the end of the word, or to the quote or line end that closes it in a shell command.
_HEADER_VALUE = re.compile(r"""[ \t]*(?P<scheme>[^\s"']+)(?:[ \t]+(?P<credential>[^"'\r\n]*[^\s"']))?""")


# The literal starts a pattern's matches may have, at most, and their length: past either, a
# pattern is looked for by shorter starts (a word holding a start holds each of its prefixes).
MAX_STARTS = 16
MAX_START_CHARS = 32


def literal_starts(pattern: re.Pattern[str]) -> tuple[str, ...]:
    """Strings one of which every match of `pattern` starts with, so that a word holding none of
    them holds no match: `gh(?<!...)[pousr]_...` -> ("ghp_", "gho_", ...).  ("",) when no literal
    is sure (case folded, a range or a repeat first): every word holds "".  Read from
    `re`'s own parse of the pattern, never by joining patterns, whose groups and flags would then
    change meaning."""
    if pattern.flags & re.IGNORECASE:
        return ("",)
    starts, _ = _starts(_regex_parser.parse(pattern.pattern, pattern.flags))
    return ("",) if "" in starts else tuple(dict.fromkeys(start[:MAX_START_CHARS] for start in starts))


def _starts(items) -> tuple[tuple[str, ...], bool]:  # a parsed (sub)pattern: (opcode, argument) pairs
    """What a match of `items` starts with (literal_starts), and whether it is always one of
    those strings whole (then what follows `items` lengthens them)."""
    starts = ("",)
    for op, argument in items:
        if op is _regex_ops.LITERAL:
            each, whole = (chr(argument),), True
        elif op is _regex_ops.IN and all(kind is _regex_ops.LITERAL for kind, _ in argument):  # [sr], no range
            each, whole = tuple(chr(code) for _, code in argument), True
        elif op is _regex_ops.SUBPATTERN and not argument[1] and not argument[2]:  # a group without flags of its own
            each, whole = _starts(argument[3])
        elif op in (_regex_ops.AT, _regex_ops.ASSERT, _regex_ops.ASSERT_NOT):  # `^`, `\b`, a lookaround: no text
            each, whole = ("",), True
        elif op is _regex_ops.BRANCH:
            branches = [_starts(branch) for branch in argument[1]]
            each = tuple(start for found, _ in branches for start in found)
            whole = all(branch_whole for _, branch_whole in branches)
        else:  # a repeat, a class with ranges, a backreference...: what it matches is not known here
            return starts, False
        if len(starts) * len(each) > MAX_STARTS:
            return starts, False
        starts = tuple(start + more for start in starts for more in each)
        if not whole:
            return starts, False
    return starts, True


def any_of(literals: Iterable[str]) -> str:
    """A regex of any one of `literals`, as a tree of their common prefixes (`a(?:b|c)`, not
    `ab|ac`): a search tries one branch a character, not every literal at every position."""
    tails: dict[str, list[str]] = {}
    for literal in sorted(set(literals)):
        tails.setdefault(literal[:1], []).append(literal[1:])
    ends = "" in tails  # one literal is a prefix of others (or is "")
    branches = [re.escape(first) + any_of(rest) for first, rest in tails.items() if first]
    if not branches:
        return ""
    either = branches[0] if len(branches) == 1 else f"(?:{'|'.join(branches)})"
    return f"(?:{either})?" if ends else either


def _compacted(text: str) -> str:
    """`text` without its separators, lowercased: where a name's hint is looked for (str.replace,
    not _SEPARATORS.sub: a quarter of its cost, in a word of every distinct command line)."""
    for separator in _SEPARATOR_CHARS:
        text = text.replace(separator, "")
    return text.lower()


def segments(name: str) -> tuple[str, ...]:
    """`--x-api-key` -> ('x', 'api', 'key'); `authToken` -> ('auth', 'token')."""
    return tuple(s.lower() for part in _SEPARATORS.split(name) for s in _CAMEL.findall(part))


def program_options(rules: Sequence[str]) -> dict[str, frozenset[str]]:
    """["curl -u", "curl --user"] -> {"curl": {"-u", "--user"}}; raises ValueError on anything else."""
    found: dict[str, set[str]] = {}
    for rule in rules:
        program, option = parts if len(parts := rule.split()) == 2 else ("", "")
        if not re.fullmatch(r"[\w.+-]+", program) or not re.fullmatch(r"-[A-Za-z0-9]|--?[A-Za-z0-9][\w-]+", option):
            raise ValueError(f"{rule!r} is not a program and one of its options, such as 'curl -u'")
        found.setdefault(program, set()).add(option)
    return {program: frozenset(options) for program, options in found.items()}


class Redactor:
    """Compiled `RedactRules`; `redactor(argv)` is argv with each secret replaced."""

    CACHE_SIZE = 1024  # distinct argv remembered: a shell loop execs the same one again and again
    # ...and what they weigh in all: a word its characters and its string object.  Usual argv (a few
    # words, a few hundred characters) fill the entries first; hostile ones (distinct, 4 KiB of
    # one-letter words) the weight, about 2 x 4 MiB held with their redacted copies.
    CACHE_WEIGHT = 4 << 20
    # Larger argv (the kernel's and /proc's are cut at 4 KiB, a replayed recording's need not be)
    # are redacted each time rather than flush the cache.
    CACHED_ARGV_CHARS = 8192
    # A word that comes out as it went in, with what it leaves for the next word: searched once.
    UNCHANGED_WORDS = UnchangedWords

    def __init__(self, rules: RedactRules) -> None:
        self._keys = frozenset(filter(None, (segments(k) for k in rules.keys)))
        self._key_lengths = frozenset(len(k) for k in self._keys)
        contains = "|".join(re.escape(c.lower()) for c in rules.contains if c)
        self._contains = re.compile(contains) if contains else None
        self._headers = tuple(filter(None, (segments(h) for h in rules.headers)))
        # What any secret or header name holds, separators aside: a name without it is judged at C speed.
        hints = {*(k[0] for k in self._keys), *(h[0] for h in self._headers), *(c.lower() for c in rules.contains if c)}
        self._hint = re.compile(any_of(hints)) if hints else None
        self._name = lru_cache(maxsize=self.CACHE_SIZE)(self._judge_name)
        self._options = program_options(rules.options)
        # Each shape with its literal starts: most words hold none, and a `str` search is cheaper
        # than the pattern's.
        self._patterns = tuple((compiled, literal_starts(compiled)) for compiled in map(re.compile, rules.patterns))
        # ...and all their starts in one search: a word holding none of them is no shape's.
        starts = {start for _, each in self._patterns for start in each}
        self._any_start = re.compile(any_of(starts)) if starts and "" not in starts else None
        # A name holds a hint only where the word holding it does, separators aside and lowercased the
        # same: but a non-ASCII hint could meet a final sigma, which lowercases by what follows it.
        self._names_hinted = self._hint is None or all(hint.isascii() for hint in hints)
        schemes = "|".join(re.escape(s) for s in rules.schemes)
        # A scheme, then its credential (`value`) or the end of the word (the credential is the next one).
        self._scheme = re.compile(rf"\b(?:{schemes})(?:[ \t]+(?=(?P<value>\S))|$)", re.IGNORECASE) if schemes else None
        self._argvs: RecentWeighedMap[Argv, Argv] = RecentWeighedMap(self.CACHE_SIZE, self.CACHE_WEIGHT, weigh_words)
        self._unchanged_words: UnchangedWords[Pending] = self.UNCHANGED_WORDS()
        self._has_rules = bool(self._keys or self._contains or self._headers or self._options or self._patterns
                               or self._scheme)

    @property
    def evicted(self) -> int:
        """Argv the cache let go past its limits."""
        return self._argvs.evicted

    @property
    def words_evicted(self) -> int:
        """Unchanged words the word cache let go past its limits."""
        return self._unchanged_words.evicted

    def __call__(self, argv: Sequence[str]) -> Argv:
        argv = tuple(argv)
        if not self._has_rules:
            return argv
        if sum(map(len, argv)) > self.CACHED_ARGV_CHARS:
            return self._redact(argv)
        redacted = self._argvs.recent(argv)
        if redacted is None:
            redacted = self._redact(argv)
            self._argvs.put(argv, redacted)
        return redacted

    def uncached(self, argv: Argv) -> Argv:
        """`argv` redacted and not kept (its unchanged words are): for a caller that keeps what it
        redacts itself (the probe's command lines, by their bytes), so no argv is held twice."""
        return self._redact(argv) if self._has_rules else argv

    def event(self, item: Event | Snapshot) -> Event | Snapshot:
        """An exec with its argv redacted, a snapshot with every process's; other events as they are."""
        if isinstance(item, Exec):
            return replaced(item, argv=self(item.argv))
        if isinstance(item, Snapshot):
            return replace(item, processes=tuple(replace(p, argv=self(p.argv)) for p in item.processes))
        return item

    def _judge_name(self, name: str) -> tuple[bool, bool]:
        """Whether `name` is a secret's, and whether it is a header whose whole value is a credential."""
        compact = _compacted(name)
        if self._hint is None or not self._hint.search(compact):
            return False, False  # most names: no key, header or contained word in them at all
        found = segments(name)
        header = any(found[-len(h) :] == h for h in self._headers)
        if header or (self._contains is not None and self._contains.search(compact)):
            return True, header
        runs = {found[i : i + length] for length in self._key_lengths for i in range(len(found) - length + 1)}
        return bool(runs & self._keys), False

    def _redact(self, argv: Argv) -> Argv:
        words = []
        pending = Pending.NOTHING
        secret_options: frozenset[str] = frozenset()  # of the last program named so far
        for word in argv:
            if pending is Pending.NOTHING:  # most words: nothing before asks for them
                if secret_options:  # after a program with secret options
                    word, pending = self._program_option(word, secret_options)
            else:
                start = len(word) - len(word.lstrip())
                if pending is Pending.HEADER:
                    word, pending = self._header_value(word, start)
                elif not word.startswith("-", start) or word[start:] == "-":  # `-v`: the next option
                    word, pending = self._value(word, start)
                else:
                    word, pending = self._program_option(word, secret_options)
            word, found = self._word(word)  # what follows the value may hold secrets too
            pending = found if found is not Pending.NOTHING else pending
            if self._options:
                secret_options = self._options.get(word.rpartition("/")[2], secret_options)
            words.append(word)
        return tuple(words)

    def _program_option(self, word: str, secret_options: frozenset[str]) -> tuple[str, Pending]:
        """`-a` (the next word is its value), `-av` and `--pass=v` of the program named before."""
        if not secret_options or not word.startswith("-"):
            return word, Pending.NOTHING
        if word in secret_options:
            return word, Pending.VALUE
        option, equals, _ = word.partition("=")
        if equals and option in secret_options:
            return self._value(word, len(option) + 1)
        if word[:2] in secret_options and not word.startswith("--"):  # a short option and its value, glued
            return self._value(word, 2)
        return word, Pending.NOTHING

    def _word(self, word: str) -> tuple[str, Pending]:
        """The word redacted, and what its last secret name or scheme leaves for the next word."""
        pending = self._unchanged_words.recent(word)
        if pending is not None:
            return word, pending
        redacted = self._shapes_replaced(word)
        if self._may_name_a_secret(redacted):
            redacted, pending = self._names_and_schemes(redacted)  # the word and rules alone
        else:
            redacted, pending = self._schemes(redacted)
        self._unchanged_words.keep(word, redacted, pending)
        return redacted, pending

    def _may_name_a_secret(self, word: str) -> bool:
        """False when no name in `word` is a secret's: each name would have to hold a hint (_judge_name)
        that the whole word, judged the same way, does not."""
        if not self._names_hinted:
            return True
        return self._hint is not None and self._hint.search(_compacted(word)) is not None

    def _shapes_replaced(self, word: str) -> str:
        """Each secret shape replaced; a shape is searched for only in a word holding one of its starts."""
        if self._any_start is not None and self._any_start.search(word) is None:
            return word
        for pattern, starts in self._patterns:
            for start in starts:
                if start in word:  # the word as the shapes before left it
                    word = pattern.sub(self._replace_match, word)
                    break
        return word

    def _names_and_schemes(self, word: str) -> tuple[str, Pending]:
        """Secret names' values and schemes' credentials replaced, and what the word's end leaves pending."""
        word, assigned = self._assignments(word)
        word, option = self._options_in(word)
        word, scheme = self._schemes(word)
        for pending in (assigned, option, scheme):
            if pending is not Pending.NOTHING:
                return word, pending
        return word, Pending.NOTHING

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

    def _assignments(self, word: str) -> tuple[str, Pending]:
        pieces = _Pieces(word)
        pending = Pending.NOTHING
        at = 0
        while match := _ASSIGNMENT.search(word, at):
            at = match.end()
            name = match.group("name")
            secret, header = self._name(name)
            if not secret:
                continue
            header = header and "=" not in match.group("sign")
            if at == len(word):
                if match.group("sign").strip() == ":":  # `Authorization:` then the value
                    pending = Pending.HEADER if header else Pending.VALUE
                break
            at, pending = self._header_span(pieces, at) if header else self._value_span(pieces, at)
        return pieces.joined(), pending

    def _options_in(self, word: str) -> tuple[str, Pending]:
        """`--token v` inside one word (a shell command, a process title); at its end, v is the next word."""
        pieces = _Pieces(word)
        pending = Pending.NOTHING
        at = 0
        while match := _OPTION.search(word, at):
            at = match.end()
            pending = Pending.NOTHING
            if not self._name(match.group("name"))[0]:
                continue
            space = _SPACE.match(word, at)
            if space is None:
                pending = Pending.VALUE  # the option ends the word
                break
            if word.startswith("-", space.end()):
                continue  # a flag: the next option follows
            at, pending = self._value_span(pieces, space.end())
        return pieces.joined(), pending

    def _schemes(self, word: str) -> tuple[str, Pending]:
        if self._scheme is None or (match := self._scheme.search(word)) is None:  # most words: nothing to rebuild
            return word, Pending.NOTHING
        pieces = _Pieces(word)
        while match:
            if match.start("value") < 0:
                return pieces.joined(), Pending.VALUE
            at, _ = self._value_span(pieces, match.start("value"))
            match = self._scheme.search(word, at)
        return pieces.joined(), Pending.NOTHING

    def _value(self, word: str, at: int) -> tuple[str, Pending]:
        pieces = _Pieces(word)
        _, pending = self._value_span(pieces, at)
        return pieces.joined(), pending

    def _header_value(self, word: str, at: int) -> tuple[str, Pending]:
        """The word after `Authorization:`.  Alone, it may be a scheme we do not know (`token`) as
        well as a credential: it goes, and so does the next word."""
        pieces = _Pieces(word)
        _, pending = self._header_span(pieces, at)
        lone = _HEADER_VALUE.fullmatch(word, at)
        return pieces.joined(), Pending.VALUE if lone is not None and lone.start("credential") < 0 else pending

    def _value_span(self, pieces: _Pieces, at: int) -> tuple[int, Pending]:
        """The value starting at `at` replaced (quotes kept); where to go on, and whether a scheme
        at the end of the word left the credential to the next word."""
        word = pieces.word
        if self._scheme is not None:
            match = self._scheme.match(word, at)
            if match is not None:
                if match.start("value") < 0:
                    return len(word), Pending.VALUE
                at = match.start("value")
        if word.startswith(REDACTED, at):  # a shape's match, in a URL's userinfo say: what follows is no value
            return at + len(REDACTED), Pending.NOTHING
        value = _VALUE.match(word, at)
        if value is None:
            return at, Pending.NOTHING
        text = value.group(0)
        replacement = REDACTED
        if text[0] in "\"'":  # quotes stay, also an unclosed one (a cut argv)
            replacement = text[0] + replacement + (text[0] if len(text) > 1 and text.endswith(text[0]) else "")
        pieces.replace(at, value.end(), replacement)
        return value.end(), Pending.NOTHING

    def _header_span(self, pieces: _Pieces, at: int) -> tuple[int, Pending]:
        """`<scheme> <credential...>`: any scheme stays, all after it goes; a lone word is the credential,
        unless it is one of the schemes, whose credential then is the next word."""
        word = pieces.word
        if word.startswith(("'", '"'), at):
            return self._value_span(pieces, at)
        value = _HEADER_VALUE.match(word, at)
        if value is None:
            return at, Pending.NOTHING
        if value.start("credential") >= 0:
            pieces.replace(value.start("credential"), value.end(), REDACTED)
            return value.end(), Pending.NOTHING
        return self._value_span(pieces, value.start("scheme"))


class _Pieces:
    """A word rebuilt once from its kept parts and replacements, in order: linear however many secrets."""

    def __init__(self, word: str) -> None:
        self.word = word
        self._parts: list[str] = []
        self._kept_from = 0

    def replace(self, start: int, end: int, replacement: str) -> None:
        self._parts += [self.word[self._kept_from : start], replacement]
        self._kept_from = end

    def joined(self) -> str:
        if not self._parts:
            return self.word
        return "".join(self._parts) + self.word[self._kept_from :]
