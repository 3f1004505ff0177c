"""The one bounded map: every table that grows with what the host does is one, so each
has a limit and its evictions are counted (in `stats` and the metrics), never silent."""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Sequence, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class BoundedMap(OrderedDict[K, V]):
    """At most `limit` entries; `put` past it evicts the oldest (in insertion order, or
    in use order for a table that `touch`es its entries) and counts it in `evicted`.
    Plain item assignment is the dict's own, for reads and updates in place."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.evicted = 0

    def put(self, key: K, value: V) -> None:
        self[key] = value
        if len(self) > self.limit:
            self.popitem(last=False)
            self.evicted += 1

    def touch(self, key: K) -> None:
        """`key` was used: the last to be evicted."""
        self.move_to_end(key)


class RecentMap(BoundedMap[K, V]):
    """A BoundedMap that evicts the least recently used: `put` and `recent` use an entry."""

    def put(self, key: K, value: V) -> K | None:
        """The key evicted to make room (None when none was), for a table that must
        undo what its entry stood for elsewhere."""
        self[key] = value
        self.move_to_end(key)
        if len(self) <= self.limit:
            return None
        evicted, _ = self.popitem(last=False)
        self.evicted += 1
        return evicted

    def recent(self, key: K, default: V | None = None) -> V | None:
        """The entry of `key` (`default` without one), used now."""
        if key in self:
            self.move_to_end(key)
            return self[key]
        return default


class RecentWeighedMap(RecentMap[K, V]):
    """A RecentMap whose keys also weigh at most `budget` in all (`weigh(key)` each): keys
    anyone can choose (every local user's argv) cannot grow it past either limit."""

    def __init__(self, limit: int, budget: int, weigh: Callable[[K], int]) -> None:
        super().__init__(limit)
        self.budget = budget
        self.weigh = weigh
        self.held = 0

    def put(self, key: K, value: V) -> None:
        if key in self:
            self.move_to_end(key)
        else:  # a new key goes in last, the most recent, by itself
            self.held += self.weigh(key)
        self[key] = value
        while len(self) > self.limit or self.held > self.budget:
            oldest, _ = self.popitem(last=False)
            self.held -= self.weigh(oldest)
            self.evicted += 1


class Memo(RecentWeighedMap[K, V]):
    """`compute(key)`, kept for the most recent keys within a RecentWeighedMap's limits:
    what is asked again and again (an exec storm's one command line) is computed once."""

    def __init__(self, compute: Callable[[K], V], limit: int, budget: int, weigh: Callable[[K], int]) -> None:
        super().__init__(limit, budget, weigh)
        self._compute = compute

    def __call__(self, key: K) -> V:
        if key in self:
            self.move_to_end(key)
            return self[key]
        value = self._compute(key)
        self.put(key, value)
        return value


STRING_WEIGHT = 64  # what a `str` object weighs beside its characters (49 bytes and up, as allocated)


def weigh_words(words: Sequence[str]) -> int:
    """What a command line (or any tuple of words) holds: its characters and a string object each."""
    return sum(map(len, words)) + STRING_WEIGHT * len(words)


def weigh_word(word: str) -> int:
    """What one word holds (weigh_words, without a tuple to hold it)."""
    return len(word) + STRING_WEIGHT


class UnchangedWords(RecentWeighedMap[str, V]):
    """Words a pass over command lines (redaction, the signature's masks) left as they were,
    each with what the pass said beside it: a build host's distinct command lines still share
    most of their words (`/bin/true`, `--`, `-o`, include paths), so each is passed over once.

    Only unchanged words: a changed one's copy could weigh ten times the word (`x` ->
    `<redacted>`).  A word weighs its characters and its string object; one longer than
    LONGEST is passed over each time rather than flush the others."""

    KEPT = 4096
    BUDGET = 1 << 20
    LONGEST = 256

    def __init__(self) -> None:
        super().__init__(self.KEPT, self.BUDGET, weigh_word)

    def keep(self, word: str, passed: str, said: V) -> None:
        """What the pass `said` of `word`, remembered when it came out as it went in (`passed`)."""
        if passed == word and len(word) <= self.LONGEST:
            self.put(word, said)

