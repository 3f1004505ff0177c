"""Source trees of spawnwatch side by side under the fork storm: for each, the
throughput ratio with its `watch --json` attached / without (as bench/forkstorm.py
measures it) and watch's CPU per traced process.  The trees take turns, round
after round, so that the host's drift (this VM's speed moves through the day)
touches each alike: compare code with this, not with figures of another hour.

    git worktree add /tmp/before HEAD~3
    sudo .venv/bin/python bench/sidebyside.py /tmp/before .      # 5 rounds of 10 s
    sudo .venv/bin/python bench/sidebyside.py /tmp/before . --mode exec   # an exec storm

With `--replay RECORDING` (no root, no storm) the trees take turns replaying one
recording with `watch --replay --json`, as bench/forkstorm.py's replay row measures it:
CPU per recorded event, start-up (the recording's head alone) taken off; and whether
every tree raised the same alerts.  Given one recording per tree, each tree replays its
own: the same session in the format each tree writes (or one tree, twice, on both).

    .venv/bin/python bench/sidebyside.py /tmp/before . --replay trace.msgpack
    .venv/bin/python bench/sidebyside.py /tmp/before . --replay trace-format1.msgpack trace-format2.msgpack

Exits 2 when any session lost an event, 3 when the trees' replays raise different alerts.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Sequence

from forkstorm import (EXEC_MODES, LOST, REPLAY_DIFFERS, alerts_of, events_and_processes, fork_storm, rate,
                       ready_to_storm, recording_head, replay_cpu, traced_storm)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trees", nargs="+", type=Path, help="spawnwatch source trees (each with src/ and bpf/)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of each run with watch (default 10)")
    parser.add_argument("--rounds", type=int, default=5, help="runs of each tree (default 5)")
    parser.add_argument("--loops", type=int, default=os.cpu_count() or 2, help="fork loops (default: one per core)")
    parser.add_argument("--mode", choices=("fork", *EXEC_MODES), default="fork",
                        help="what each child does (bench/forkloop.c): exit at once (default), or exec /bin/true"
                             " with the same argv as every other child, or with its own")
    parser.add_argument("--replay", type=Path, nargs="+", metavar="RECORDING",
                        help="replay this recording with each tree instead of running storms (no root);"
                             " or one recording per tree, in the trees' order")
    options = parser.parse_args(argv)
    for recording in options.replay or ():
        if not recording.is_file():
            parser.error(f"--replay: {recording} is not a file")
    if options.replay is not None and len(options.replay) not in (1, len(options.trees)):
        parser.error(f"--replay: {len(options.replay)} recordings for {len(options.trees)} trees:"
                     f" give one, or one per tree")
    for tree in options.trees:
        if not (tree / "src" / "spawnwatch").is_dir() or not (tree / "bpf").is_dir():
            parser.error(f"{tree} is not a spawnwatch source tree (no src/spawnwatch or bpf/)")
    for name in ("duration", "rounds", "loops"):
        if getattr(options, name) <= 0:
            parser.error(f"--{name} must be above 0")
    return options


def tree_env(tree: Path) -> dict[str, str]:
    """The environment that runs `tree`'s spawnwatch and BPF programs."""
    return dict(os.environ, PYTHONPATH=str(tree.resolve() / "src"), SPAWNWATCH_BPF_DIR=str(tree.resolve() / "bpf"))


def one_run(tree: Path, options: argparse.Namespace) -> tuple[float, float, int]:
    """(throughput ratio, watch's CPU per process in us, events lost) of one run:
    half a run without watch either side of the run with it."""
    before = fork_storm(options.duration / 2, options.loops, options.mode)
    traced, cpu, session = traced_storm("watch", options, env=tree_env(tree), mode=options.mode)
    after = fork_storm(options.duration / 2, options.loops, options.mode)
    return rate(traced) / ((rate(before) + rate(after)) / 2), cpu / traced[0] * 1e6, session.lost


def replays(options: argparse.Namespace) -> int:
    """Each tree's `watch --replay` of its recording, in turns: CPU per recorded event."""
    recordings = options.replay * len(options.trees) if len(options.replay) == 1 else options.replay
    pairs = list(zip(options.trees, recordings))
    events = [events_and_processes(recording)[0] for recording in recordings]
    if not all(events):
        print(f"error: {recordings[events.index(0)]} holds no process event to measure", file=sys.stderr)
        return 1
    names = [str(tree) if len(options.replay) == 1 else f"{tree} on {recording.name}" for tree, recording in pairs]
    runs: list[list[float]] = [[] for _ in pairs]
    alerts: list[list[tuple]] = [[] for _ in pairs]
    with tempfile.TemporaryDirectory(prefix="spawnwatch-bench-") as directory:
        heads = [recording_head(recording, Path(directory) / f"head{number}.msgpack")
                 for number, recording in enumerate(recordings)]
        for round_ in range(1, options.rounds + 1):
            for number, (tree, recording) in enumerate(pairs):
                startup_s, _ = replay_cpu(heads[number], tree_env(tree))
                spent_s, output = replay_cpu(recording, tree_env(tree))
                runs[number].append((spent_s - startup_s) / events[number] * 1e6)
                if round_ == 1:
                    alerts[number] = alerts_of(output)
                print(f"round {round_} {names[number]}: {runs[number][-1]:.2f} us/event", flush=True)
    for number, results in enumerate(runs):
        print(f"{names[number]}: replay median {statistics.median(results):.2f} us/event"
              f" ({', '.join(f'{r:.2f}' for r in results)}) of {events[number]} events,"
              f" {len(alerts[number])} alert records")
    same = len({tuple(found) for found in alerts}) == 1
    print(f"the same alerts from every tree: {'yes' if same else 'NO'}")
    return 0 if same else REPLAY_DIFFERS


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    if options.replay is not None:
        return replays(options)
    if not ready_to_storm():
        return 1
    runs: dict[Path, list[tuple[float, float, int]]] = {tree: [] for tree in options.trees}
    for round_ in range(1, options.rounds + 1):
        for tree in options.trees:
            ratio, cpu_us, lost = one_run(tree, options)
            runs[tree].append((ratio, cpu_us, lost))
            print(f"round {round_} {tree}: ratio {ratio:.3f}, watch {cpu_us:.2f} us/process, lost {lost}", flush=True)
    for tree, results in runs.items():
        print(f"{tree}: ratio median {statistics.median(r[0] for r in results):.3f}"
              f" ({', '.join(f'{r[0]:.3f}' for r in results)}),"
              f" watch median {statistics.median(r[1] for r in results):.2f} us/process,"
              f" lost {sum(r[2] for r in results)}")
    return LOST if any(r[2] for results in runs.values() for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
