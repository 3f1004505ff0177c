"""Docker's containers: named by the engine's API, in adapters/engine.py (names, image,
compose project and service, limits, and the event stream the resolver follows).

Nothing here reads Docker's state on disk yet; `names` declines every container so that
`find` can treat every runtime alike while the resolver keeps asking the engine.
"""

from __future__ import annotations

from spawnwatch.adapters.cgroups import CgroupContainer
from spawnwatch.adapters.runtimes.state import RuntimeNames

RUNTIME = "docker"


def names(ref: CgroupContainer) -> RuntimeNames | None:
    """Always None: the engine (adapters/engine.py) names Docker's containers."""
    return None
