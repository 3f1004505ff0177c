"""`spawnwatch reap`: end a leaked group of identical children, or the containers exited
`docker run` clients left running, without restarting what spawned them.

collect (I/O: the ledger, the engine, /proc) -> plan (pure: which group or which
alert's containers, and the gate) -> execute (the only signals and engine calls) ->
render (the record, and its human view).
"""

from __future__ import annotations

from spawnwatch.reap.collect import ContainerState, ledger_leaks, self_and_ancestors, spawner_is_alive, survey
from spawnwatch.reap.execute import (
    ContainerOutcome, Interrupted, Outcome, ReapError, end_containers, end_processes,
)
from spawnwatch.reap.plan import (
    AMBIGUOUS, INIT, ORPHANED_CONTAINERS, ContainerLeak, GroupId, ListedContainer, Plan, Selection, SelectionError,
    container_leaks, container_refusal, flagged, names_docker_client, pick, plan, recheck, refusal,
)
from spawnwatch.reap.render import (
    containers_outcome_record, containers_record, outcome_record, plan_record, render,
)

__all__ = ["AMBIGUOUS", "INIT", "ORPHANED_CONTAINERS", "ContainerLeak", "ContainerOutcome", "ContainerState", "GroupId",
           "Interrupted", "ListedContainer", "Outcome", "Plan", "ReapError", "Selection", "SelectionError",
           "container_leaks", "container_refusal", "containers_outcome_record", "containers_record",
           "end_containers", "end_processes", "flagged", "ledger_leaks", "names_docker_client", "outcome_record",
           "pick", "plan", "plan_record", "recheck", "refusal", "render", "self_and_ancestors", "spawner_is_alive",
           "survey"]
