"""The one bounded map: every table that grows with what the host does is one, so each
has a limit and its evictions are counted (in `stats` and the metrics), never silent."""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable, TypeVar

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
