"""`spawnwatch report`: the investigation of a memory-hungry host, in one table.

Host memory; per container its memory (and share of the host), limit, process
count, restart count and largest groups of identical processes; Docker's dangling
images and unused volumes; the containers exited `docker run` clients left running
(from the ledger of a running `watch`); and what to do: limits as a compose snippet,
a `reap` command for each leaked group and each host's leaked containers, prunes.

collect (I/O: /proc, cgroups, the engine, optionally the probe) -> facts ->
plan (actions from the facts) -> render (the report dict, and its human view).
"""

from __future__ import annotations

from typing import Any

from spawnwatch.config import Config
from spawnwatch.report.collect import collect
from spawnwatch.report.facts import (
    ContainerFacts, Facts, GroupFacts, LeakedContainerFacts, LedgerFacts, ReportSettings,
)
from spawnwatch.report.plan import Action, plan
from spawnwatch.report.render import build, render

__all__ = ["Action", "ContainerFacts", "Facts", "GroupFacts", "LeakedContainerFacts", "LedgerFacts", "ReportSettings",
           "build", "collect", "investigate", "plan", "render"]


def investigate(config: Config, trace_seconds: float | None = None,
                settings: ReportSettings = ReportSettings(), state_dir: str | None = None) -> dict[str, Any]:
    """Collect everything and build the report (`trace_seconds` needs root and BPF)."""
    return build(collect(config, trace_seconds, settings, state_dir), settings)
