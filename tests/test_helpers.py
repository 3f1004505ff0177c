"""The test helpers fail loudly: a wait that never succeeds fails the test, saying what it waited for."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import wait_for
from live import LiveCommand

FIXTURES = Path(__file__).parent / "fixtures"


def test_a_live_wait_that_never_holds_fails_naming_what_it_waited_for() -> None:
    # A replay ends by itself right after its ready line: the wait cannot hold.
    with LiveCommand("watch", "--replay", str(FIXTURES / "snapshot.msgpack"), "--json") as replay:
        with pytest.raises(AssertionError, match=r"waiting for a record that never comes: it ended with 0; last records: \[\{'kind': 'ready'"):
            replay.wait_for(lambda records: False, "a record that never comes")


def test_a_wait_that_never_holds_fails_naming_what_it_waited_for() -> None:
    with pytest.raises(AssertionError, match="timed out waiting for the impossible"):
        wait_for(lambda: False, "the impossible", deadline=0.2)
