"""The firing alerts of a live `watch`, kept in its state directory for `report` and
`reap` (adapters/ledger.py holds the file's format and when a reader may trust it).

Fed every record like the other sinks: `ready` names the writer and writes an empty
ledger (a watch runs, nothing fires); a firing alert enters or updates its entry, a
resolved one leaves.  The file is rewritten only when that changes the set of firing
alerts or what one of them says (counts, containers, severity, message).  As bounded
as the alert book: one entry per firing alert.

Each entry is the alert's record, plus:
  spawner.start  the spawner's start (seconds since boot) when the alert first fired,
                 so `reap` ends nothing for a process that merely got the pid since
  firing_since   wall-clock time the alert first fired
  listed_at      wall-clock time of the record the entry holds: every container it
                 lists was created before then
"""

from __future__ import annotations

import time
from typing import Any, Callable

from spawnwatch.adapters import ledger, procfs
from spawnwatch.alerts import FIRING
from spawnwatch.records import ALERT, READY
from spawnwatch.sinks import Record

VOLATILE = ("time",)  # changes with every re-send, says nothing new


class LedgerBusy(Exception):
    """Another live process keeps the ledger of this state directory."""


class Ledger:
    def __init__(self, state_dir: str, on_error: Callable[[str], None] = lambda message: None,
                 clock: Callable[[], float] = time.time) -> None:
        self.path = ledger.ledger_path(state_dir)
        self._state_dir = state_dir
        self._on_error = on_error
        self._clock = clock
        self._lock = ledger.claim(state_dir)  # OSError: cannot be made or locked; UntrustedLedger: another's
        if self._lock is None:
            raise LedgerBusy(f"{self.path} is kept by another `watch`")
        self._writer: ledger.Writer | None = None
        # (rule, signature, spawner pid, container id) -> (what the alert says, its entry)
        self._alerts: dict[tuple[Any, ...], tuple[Record, Record]] = {}
        self._last_error: str | None = None

    def send(self, record: Record) -> None:
        kind = record.get("kind")
        if kind == READY:
            self._writer = ledger.Writer.running(record["pid"], record["host"], record["boot_time"])
            self._write(self._writer)
        elif kind == ALERT and self._writer is not None:
            if self._update(record):
                self._write(self._writer)

    def close(self) -> None:
        ledger.release(self._state_dir, self._lock)

    def _update(self, record: Record) -> bool:
        """Whether `record` changed the firing alerts."""
        key = (record["rule"], record["signature"], record["spawner"]["pid"], (record.get("container") or {}).get("id"))
        known = self._alerts.get(key)
        if record["state"] != FIRING:
            return self._alerts.pop(key, None) is not None
        said = {k: v for k, v in record.items() if k not in VOLATILE}
        if known is not None and known[0] == said:
            return False
        now = self._clock()
        spawner = record["spawner"]
        start = known[1]["spawner"]["start"] if known else procfs.start_time(spawner["pid"])
        entry = {**record, "spawner": {**spawner, "start": start},
                 "firing_since": known[1]["firing_since"] if known else now, "listed_at": now}
        self._alerts[key] = (said, entry)
        return True

    def _write(self, writer: ledger.Writer) -> None:
        try:
            ledger.write(self._state_dir, writer, [entry for _, entry in self._alerts.values()])
            self._last_error = None
        except OSError as exc:
            message = f"cannot write the ledger {self.path}: {exc.strerror or exc}"
            if message != self._last_error:  # once per kind of failure, not once per change
                self._on_error(message)
            self._last_error = message
