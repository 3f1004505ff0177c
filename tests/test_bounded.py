"""The bounded maps' own promises, beside the tables built on them: a Memo computes a key
once while it is kept (a None answer too), keeps what fits its limits, and counts each
key it lets go."""

from __future__ import annotations

from spawnwatch.bounded import STRING_WEIGHT, Memo, weigh_words


def test_a_memo_computes_each_kept_key_once_none_included() -> None:
    asked: list[str] = []

    def compute(key: str) -> str | None:
        asked.append(key)
        return None if key == "nothing" else key.upper()

    memo = Memo(compute, limit=8, budget=1 << 10, weigh=len)
    assert [memo(k) for k in ("a", "nothing", "a", "nothing", "b")] == ["A", None, "A", None, "B"]
    assert asked == ["a", "nothing", "b"] and memo.evicted == 0


def test_a_memo_is_bounded_by_entries_and_weight_and_lets_the_least_recent_go() -> None:
    memo = Memo(str.upper, limit=3, budget=1 << 10, weigh=len)
    for key in ("a", "b", "c", "a", "d"):  # `a` used again: `b` is the least recent
        memo(key)
    assert list(memo) == ["c", "a", "d"] and memo.evicted == 1
    heavy = Memo(str.upper, limit=100, budget=10, weigh=len)
    for key in ("aaaa", "bbbb", "cccc"):  # 12 past a budget of 10: the oldest goes
        heavy(key)
    assert list(heavy) == ["bbbb", "cccc"] and heavy.held == 8 and heavy.evicted == 1


def test_words_weigh_their_characters_and_a_string_object_each() -> None:
    assert weigh_words(("node", "x")) == 5 + 2 * STRING_WEIGHT and weigh_words(()) == 0
