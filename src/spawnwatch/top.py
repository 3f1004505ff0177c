"""`top`'s view model: the groups that matter, as rows a terminal shows, from the group book.

Pure: the groups, the firing alerts and the containers come in; rows of text that went
through `spawnwatch.text` come out, so the terminal part only lays them out.  A group
matters when an alert fires for it, it has several live members, or it grew in the
trend's window; rows are sorted by growth (or by what the operator picked).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

from spawnwatch.alerts import Alert
from spawnwatch.detect.groups import Group, GroupKey
from spawnwatch.filters import container_matches
from spawnwatch.text import human_bytes, printable

QUIET, WARNING, CRITICAL = "quiet", "warning", "critical"
STATE_RANK = {QUIET: 0, WARNING: 1, CRITICAL: 2}
SORTS = ("growth", "live", "rate", "rss", "state")  # the `s` key cycles through them in this order
# Live counts kept per group: one per evaluation (a second by default), so the sparkline
# and the growth cover the last two minutes.
TREND_SAMPLES = 120
# Groups whose trend is kept: beyond it, the groups that matter least go without a trend.
MAX_TRENDS = 2000
MAX_ROWS = 500  # rows handed to the terminal, the first by the chosen sort
SPARKS = "▁▂▃▄▅▆▇█"
SPARK_WIDTH = 20
SPAWNER_WIDTH = 24
SIGNATURE_WIDTH = 60
CONTAINER_WIDTH = 28

ContainerOf = Callable[[Group], Mapping[str, Any] | None]


@dataclass(frozen=True)
class Row:
    key: GroupKey
    spawner_pid: int
    spawner: str  # comm (pid), safe for a terminal
    signature: str  # safe for a terminal, cut
    live: int
    growth: int  # live members gained over the trend's window
    sparkline: str
    per_minute: int  # spawns in the last minute
    rss_bytes: int | None  # None: not measured (no rule asked for it)
    rss: str
    container: str  # the container's name (its id when unnamed), safe for a terminal; "-" on the host
    container_name: str | None  # as the engine said it, for the container filter
    state: str  # quiet, warning or critical
    rules: str  # the firing rules, by name


class Trend:
    """The live count of each group that matters, sampled at each evaluation: at most
    MAX_TRENDS groups of TREND_SAMPLES samples each."""

    def __init__(self, samples: int = TREND_SAMPLES, max_groups: int = MAX_TRENDS) -> None:
        self.samples = samples
        self.max_groups = max_groups
        self._live: dict[GroupKey, deque[int]] = {}

    def sample(self, groups: Iterable[Group], alerting: Iterable[GroupKey] = ()) -> None:
        """Add one sample per group; a group not given (expired, or no longer mattering) loses its trend."""
        firing = set(alerting)
        kept: dict[GroupKey, deque[int]] = {}
        for group in sorted(groups, key=lambda g: (g.key not in firing, -g.live)):
            history = self._live.get(group.key)
            if history is None:
                if group.live < 2 and group.key not in firing:
                    continue  # a single child is no trend yet; it gets one once it has a sibling
                history = deque(maxlen=self.samples)
            history.append(group.live)
            kept[group.key] = history
            if len(kept) >= self.max_groups:
                break
        self._live = kept

    def of(self, key: GroupKey) -> Sequence[int]:
        return self._live.get(key, ())

    def __len__(self) -> int:
        return len(self._live)


def sparkline(samples: Sequence[int], width: int = SPARK_WIDTH) -> str:
    """The last `width` samples as bars, scaled from 0 to the highest of them."""
    shown = list(samples)[-width:]
    if not shown:
        return ""
    top = max(shown)
    if top <= 0:
        return SPARKS[0] * len(shown)
    return "".join(SPARKS[min(len(SPARKS) - 1, value * (len(SPARKS) - 1) // top)] for value in shown)


def states(active: Iterable[tuple[Group, Alert]]) -> dict[GroupKey, tuple[str, list[str], Alert]]:
    """Per group: the highest severity firing, the rules firing, and its latest alert."""
    by_group: dict[GroupKey, tuple[str, list[str], Alert]] = {}
    for group, alert in active:
        state, rules, _ = by_group.get(group.key, (QUIET, [], alert))
        if STATE_RANK.get(alert.severity, 0) > STATE_RANK[state]:
            state = alert.severity
        by_group[group.key] = (state, sorted({*rules, alert.rule}), alert)
    return by_group


def rows(groups: Iterable[Group], active: Iterable[tuple[Group, Alert]], trend: Trend, now: float,
         container_of: ContainerOf = lambda group: None, sort: str = "growth",
         container: str | None = None) -> list[Row]:
    """The rows of the groups that matter, sorted by `sort` (largest first), only those in the
    container named `container` when given; at most MAX_ROWS."""
    alerting = states(active)
    shown: list[Row] = []
    for group in groups:
        firing = alerting.get(group.key)
        samples = trend.of(group.key)
        growth = group.live - samples[0] if samples else 0
        if firing is None and group.live < 2 and growth <= 0:
            continue
        where = (firing[2].container if firing is not None and firing[2].container else None) or container_of(group)
        if container is not None and not container_matches(dict(where) if where else None, container):
            continue
        shown.append(row(group, firing, samples, growth, now, where))
    shown.sort(key=SORT_KEYS[sort], reverse=True)
    return shown[:MAX_ROWS]


def row(group: Group, firing: tuple[str, list[str], Alert] | None, samples: Sequence[int], growth: int, now: float,
        where: Mapping[str, Any] | None) -> Row:
    rss: int | None = None
    if firing is not None and firing[2].rss_bytes:
        rss = firing[2].rss_bytes
    elif group.memory_at is not None:
        rss = group.memory[0]
    name = str(where.get("name") or where.get("id") or "") if where else None
    return Row(
        key=group.key,
        spawner_pid=group.spawner.pid,
        spawner=f"{printable(group.spawner.comm, SPAWNER_WIDTH - 10)} ({group.spawner.pid})",
        signature=printable(group.key.signature, SIGNATURE_WIDTH),
        live=group.live,
        growth=growth,
        sparkline=sparkline(samples),
        per_minute=group.history.count(now - 60, now + 1),
        rss_bytes=rss,
        rss=human_bytes(rss) if rss is not None else "-",
        container=printable(name, CONTAINER_WIDTH) if name else "-",
        container_name=name,
        state=firing[0] if firing is not None else QUIET,
        rules=", ".join(firing[1]) if firing is not None else "",
    )


SORT_KEYS: dict[str, Callable[[Row], tuple]] = {
    "growth": lambda r: (r.growth, STATE_RANK[r.state], r.live),
    "live": lambda r: (r.live, r.growth),
    "rate": lambda r: (r.per_minute, r.live),
    "rss": lambda r: (r.rss_bytes or 0, r.live),
    "state": lambda r: (STATE_RANK[r.state], r.growth, r.live),
}


def next_sort(sort: str) -> str:
    return SORTS[(SORTS.index(sort) + 1) % len(SORTS)]


def next_container(current: str | None, shown: Iterable[Row]) -> str | None:
    """The container filter after `c`: all, then each container of the rows in turn, then all again."""
    names = sorted({r.container_name for r in shown if r.container_name})
    if current in names:
        following = names.index(current) + 1
        return names[following] if following < len(names) else None
    return names[0] if current is None and names else None


def title(host: str, sort: str, container: str | None, shown: int, source: str) -> str:
    """The first line of the view (`source`: live, or the recording's name, a user's file name)."""
    where = printable(container, CONTAINER_WIDTH) if container is not None else "all"
    return (f"spawnwatch top  {printable(host, 40)}  {printable(source, 80)}  {shown} group{'s' if shown != 1 else ''}"
            f"  sort: {sort}  container: {where}")


KEYS_HELP = "↑/↓ select  s sort  c container  t tree  r reap dry run  esc back  q quit"
