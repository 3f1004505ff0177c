"""Background work that never dies silently: the one supervisor of every background thread.

A thread whose work raises would end without a word, and what it did (following the
engine's events, posting alerts) would stop for the rest of the session.  Under
`Supervised`, a failure is logged at error level the first time (a failure that recurs
on every restart would flood the log), counted by component (`internal_errors()`: the
stats record and `spawnwatch_internal_errors_total{component}`), and the work is
started again after a backoff that doubles up to a cap.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from typing import Callable

from spawnwatch.text import printable

log = logging.getLogger(__name__)

# Every supervised component: the label values of spawnwatch_internal_errors_total, a fixed set.
DOCKER_EVENTS = "docker_events"
PODMAN_EVENTS = "podman_events"
ALERT_DELIVERY = "alert_delivery"
COMPONENTS = (DOCKER_EVENTS, PODMAN_EVENTS, ALERT_DELIVERY)

RESTART_MIN_S = 0.5
RESTART_MAX_S = 30.0
REASON_WIDTH = 300

_lock = threading.Lock()
_errors: Counter[str] = Counter()
_last_reasons: dict[str, str] = {}


def internal_errors() -> dict[str, int]:
    """The failures of background work in this process so far, by component (all of them, 0 included)."""
    with _lock:
        return {component: _errors[component] for component in COMPONENTS}


def last_failure(component: str) -> str | None:
    """Why the component last failed (the exception, made printable and cut), None if it never did."""
    with _lock:
        return _last_reasons.get(component)


class Supervised:
    """`work` run in a daemon thread until it returns, restarted whenever it raises.

    `work` returns when it is done (it watches `stop`, or its own signal); `stop`
    also ends a restart's wait.  A failure after the work ran longer than the cap
    is a new one: the backoff starts again from its minimum."""

    def __init__(self, component: str, work: Callable[[], None], stop: threading.Event,
                 restart_min_s: float = RESTART_MIN_S, restart_max_s: float = RESTART_MAX_S) -> None:
        if component not in COMPONENTS:
            raise ValueError(f"unknown component {component!r}: add it to supervise.COMPONENTS")
        self.component = component
        self.failures = 0
        self._work = work
        self._stop = stop
        self._restart_min_s = restart_min_s
        self._restart_max_s = restart_max_s
        self.thread = threading.Thread(target=self._run, name=f"spawnwatch-{component.replace('_', '-')}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def join(self, timeout: float | None = None) -> None:
        self.thread.join(timeout)

    def _run(self) -> None:
        backoff = self._restart_min_s
        while not self._stop.is_set():
            began = time.monotonic()
            try:
                self._work()
                return
            except Exception as exc:  # noqa: BLE001 - any failure: say it, count it, start again
                if time.monotonic() - began > self._restart_max_s:
                    backoff = self._restart_min_s
                self._failed(exc, backoff)
            if self._stop.wait(backoff):
                return
            backoff = min(backoff * 2, self._restart_max_s)

    def _failed(self, exc: Exception, backoff: float) -> None:
        self.failures += 1
        reason = printable(f"{type(exc).__name__}: {exc}", REASON_WIDTH)
        with _lock:
            _errors[self.component] += 1
            _last_reasons[self.component] = reason
        if self.failures == 1:
            log.error("internal error in %s: %s; restarting it (backoff %.1f-%.0f s; "
                      "further failures are counted in internal_errors, not logged)",
                      self.component, reason, backoff, self._restart_max_s)
        else:
            log.debug("internal error in %s again: %s", self.component, reason)
        log.debug("%s failed", self.component, exc_info=exc)
