"""Events in, alerts out: lineage -> detector -> alert book.

The one path for live and replayed streams.  `watch` feeds it the probe's
events and advances it on the clock, recording the time of every evaluation
(a `tick`); `watch --replay` feeds it the recorded events and evaluates at the
recorded ticks, so it raises exactly the alerts the live session raised.  A
recording without ticks (`trace --record`) is evaluated on its events' clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from spawnwatch.alerts import FIRING, Alert, AlertBook, ResolveContainer
from spawnwatch.config import Config
from spawnwatch.detect import REAPABLE, ContainerMemoryOf, Detector, Finding, MemoryOf, SocketsOf
from spawnwatch.events import EVENT_TYPES, ContainerEvent, Event, Observation, Oom, PidsSample, Resync, Snapshot
from spawnwatch.lineage import Lineage, ReparentHint
from spawnwatch.signature import DEFAULT_ENGINE, Signer

PROCESS_EVENT_TYPES = frozenset(EVENT_TYPES.values())


class Pipeline:
    def __init__(
        self,
        config: Config,
        memory_of: MemoryOf | None = None,
        container_memory: ContainerMemoryOf | None = None,
        resolve_container: ResolveContainer | None = None,
        reparent_hint: ReparentHint | None = None,
        auto_advance: bool = True,
        local_engine: str = DEFAULT_ENGINE,
        sockets_of: SocketsOf | None = None,
    ) -> None:
        self.config = config
        self.signer = Signer(config.signature)
        self.detector = Detector(config.detect, self.signer.program, memory_of,
                                 self.signer.container_client, container_memory,
                                 local_engine, sockets_of)
        self.lineage = Lineage(self.signer, config.lineage, reparent_hint,
                               listener=self.detector.listener)
        self.alerts = AlertBook(config.alerts, resolve_container)
        self.auto_advance = auto_advance  # evaluate when an event's time says one is due
        self.now = 0.0
        self.evaluations = 0
        self._next_evaluation: float | None = None

    def feed(self, item: Event | Observation | Snapshot) -> list[Alert]:
        """Apply one event (a process's; a container's lifecycle; a pids sample; the starting
        snapshot, or a resync); with auto_advance, the alerts due by its time."""
        item_type = type(item)
        if item_type in PROCESS_EVENT_TYPES:  # nearly every item: tested first, by exact type
            proc = self.lineage.apply(item)
            if item_type is Oom and proc is not None:
                self._next_evaluation = None  # report the kill at once
        elif isinstance(item, Resync):
            return self.resync(item)
        elif isinstance(item, PidsSample):
            self.detector.pids.add(item)
        elif isinstance(item, ContainerEvent):
            self.detector.containers.apply(item)
        elif isinstance(item, Snapshot):
            self.detector.containers.seeded(self.lineage.seed(item), item.ts)
            self._next_evaluation = None  # judge the snapshot at once: it may already hold a leak
        else:
            raise TypeError(f"not an event, observation or snapshot: {item!r:.80}")
        if self.auto_advance:  # advance(item.ts), inlined: a call was 2% of a replayed event
            if item.ts > self.now:
                self.now = item.ts
            if self._next_evaluation is None or self.now >= self._next_evaluation:
                return self.evaluate(self.now)
        return []

    def resync(self, snapshot: Snapshot) -> list[Alert]:
        """Make the table agree with /proc after the kernel lost events; judged at once."""
        self.detector.containers.seeded(self.lineage.resync(snapshot), snapshot.ts)
        self._next_evaluation = None
        return self.advance(snapshot.ts) if self.auto_advance else []

    def advance(self, now: float) -> list[Alert]:
        """Evaluate if an evaluation is due at `now` (seconds since boot)."""
        if now > self.now:
            self.now = now
        if self._next_evaluation is not None and self.now < self._next_evaluation:
            return []
        return self.evaluate(self.now)

    def evaluate(self, now: float) -> list[Alert]:
        """Evaluate now, due or not: the alerts to send."""
        return self.alerts.update(self.findings(now), self.now)

    def findings(self, now: float) -> list[Finding]:
        """Evaluate now, due or not: what the rules find, before the alert book."""
        self.now = max(self.now, now)
        self._next_evaluation = self.now + self.config.detect.evaluate_every_s
        self.evaluations += 1
        self.lineage.expire(self.now)
        return self.detector.evaluate(self.now)

    def evicted_by_table(self) -> dict[str, int]:
        """What the caches of command lines let go past their limits (the session's stats)."""
        return {"signed_argvs": self.lineage.signatures_evicted,
                "container_client_argvs": self.detector.containers.client_argvs_evicted,
                "unmasked_words": self.signer.words_evicted}

    def counts(self) -> dict[str, Any]:
        """Bookkeeping for the end-of-session summary."""
        return {
            "processes": len(self.lineage),
            "groups": len(self.detector.groups),
            **self.lineage.counts,
            **self.detector.counts,
        }


@dataclass(frozen=True, slots=True)
class Judgement:
    """A snapshot judged as `watch` judges it at its first evaluation."""

    pipeline: Pipeline  # the table judged: its lineage, groups and charged orphans
    findings: list[Finding]
    alerts: list[Alert]  # one firing alert per finding, its container named

    def reapable(self) -> list[Alert]:
        """The firing alerts whose processes a signal can end (`reap`'s gate)."""
        return [alert for alert in self.alerts if alert.state == FIRING and alert.rule in REAPABLE]


def judge(config: Config, snapshot: Snapshot, reparent_hint: ReparentHint | None = None,
          resolve_container: ResolveContainer | None = None) -> Judgement:
    """/proc judged once, as `tree`, `report` and `reap` show and act on it."""
    pipeline = Pipeline(config, resolve_container=resolve_container, reparent_hint=reparent_hint, auto_advance=False)
    pipeline.feed(snapshot)
    findings = pipeline.findings(snapshot.ts)
    return Judgement(pipeline, findings, pipeline.alerts.update(findings, pipeline.now))
