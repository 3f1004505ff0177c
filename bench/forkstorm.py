"""Fork-storm benchmark: what each live consumer (`watch`, `trace --json`) costs the
heaviest process churn this machine makes, what each BPF program costs per event,
and whether anything is lost.

One `forkloop` per core (`fork(); _exit(0)`, bench/forkloop.c) in every phase:

1. ALTERNATIONS rounds, each a run with every consumer attached in turn, and a
   run without any consumer after each: `watch --json` and `trace --json`
   (output to /dev/null), and the floor under them, consumers that stop part way
   (bench/partial_consumer.py): `attach` (a program that returns at once on each
   of the probe's tracepoints), `kernel` (the BPF programs attached, the ring
   handed back unread) and `probe` (records decoded and completed, then dropped).
   Each ratio is the run with the consumer over the mean of the runs without
   either side of it (the machine's speed drifts); the median of each consumer's
   is reported, with its CPU (utime + stime, storm and drain) per traced process
   and per event;
2. `watch`'s CPU a second with no storm (the floor under every per-process figure),
   then ALTERNATIONS rounds of an exec storm (children that exec /bin/true) with each
   of `watch --json` and the floor under it (`attach`, `kernel`, `probe`) attached in
   turn and without after each, once with every child's command line the same (a
   leak's children: `exec`) and once with each its own (`exec-distinct`): the
   throughput ratio and the consumer's CPU per exec'd process, medians, as in 1;
3. `watch` attached while the storm forks PROCESSES processes (1,000,000 by
   default) in DURATION-second chunks, then while children exec /bin/true until
   more than the process table's cap have (for `watch` a short exec'd child, like
   a fork-only one, comes whole in one record or counted in a tally and enters no
   table: its RSS stays flat; the table's cap is reached by long lives only): its
   anonymous RSS after each chunk, and the ns/event of every BPF program
   (kernel.bpf_stats_enabled) in the fork storm and in the exec storm;
4. `watch --record` over one run, then `watch --replay` of its recording: whether
   the replay raises the alerts the live session raised; and `trace --record` over
   another (every process by pid: `watch` records a storm's short lives as a few
   tallies), whose `watch --replay` gives the CPU per recorded event (decode +
   lineage + detect; interpreter start-up, measured on the recording's first
   records alone, taken off; medians of REPLAYS replays of each).

Exits 2 when any consumer lost an event, 3 when the replay's alerts differ.

    sudo make bench            # or: sudo .venv/bin/python bench/forkstorm.py --duration 10
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Iterator, Sequence

import msgpack

from spawnwatch.events import Brief, Event, Fork, Tally, from_record
from spawnwatch.recording import read_records

HERE = Path(__file__).resolve().parent
FORKLOOP = HERE / "forkloop"
STATS_SYSCTL = Path("/proc/sys/kernel/bpf_stats_enabled")
TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")
# What runs after the interpreter, for each consumer: the floor first, as the summary reads.
PARTIAL_CONSUMER = str(HERE / "partial_consumer.py")
CONSUMERS = {
    "attach": [PARTIAL_CONSUMER, "attach"],
    "kernel": [PARTIAL_CONSUMER, "kernel"],
    "probe": [PARTIAL_CONSUMER, "probe"],
    "watch": ["-m", "spawnwatch", "watch", "--json"],
    "trace": ["-m", "spawnwatch", "trace", "--json"],
}
EXEC_MODES = ("exec", "exec-distinct")  # bench/forkloop.c's: argv the same in every child, or each its own
EXEC_CONSUMERS = ("attach", "kernel", "probe", "watch")  # the floor under watch, as for the fork storm
TABLE_CAP = 65536  # the default [lineage] max_processes
EXECS_PAST_CAP = TABLE_CAP * 5 // 4
REPLAYS = 5  # of the trace recording and of its head, for the replay's CPU per event
LOST = 2
REPLAY_DIFFERS = 3


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per storm run (default 10)")
    parser.add_argument("--alternations", type=int, default=5,
                        help="runs with each consumer, their median reported (default 5: this VM's speed"
                             " swings by several percent within minutes)")
    parser.add_argument("--processes", type=int, default=1_000_000,
                        help="processes forked under the long watch run (default 1,000,000)")
    parser.add_argument("--loops", type=int, default=os.cpu_count() or 2, help="fork loops (default: one per core)")
    options = parser.parse_args(argv)
    for name in ("duration", "alternations", "processes", "loops"):
        if getattr(options, name) <= 0:
            parser.error(f"--{name} must be above 0")
    return options


def exit_code(lost: int, replay_matches: bool) -> int:
    """0 when nothing was lost and the replay agreed with the live session."""
    if lost:
        return LOST
    return 0 if replay_matches else REPLAY_DIFFERS


def build_forkloop() -> None:
    source = HERE / "forkloop.c"
    if not FORKLOOP.exists() or FORKLOOP.stat().st_mtime < source.stat().st_mtime:
        subprocess.run(["cc", "-O2", "-o", str(FORKLOOP), str(source)], check=True)


def ready_to_storm() -> bool:
    """Root (it loads BPF programs) and the fork loop built; says what is missing."""
    if os.geteuid() != 0:
        print("error: the benchmark loads BPF programs: run it as root", file=sys.stderr)
        return False
    build_forkloop()
    return True


def fork_storm(seconds: float, loops: int, mode: str = "fork") -> tuple[int, float]:
    """Forks made by `loops` concurrent fork loops, and the seconds they took."""
    procs = [
        subprocess.Popen([str(FORKLOOP), str(seconds), mode], stdout=subprocess.PIPE, text=True)
        for _ in range(loops)
    ]
    started = time.monotonic()
    total = sum(int(p.communicate()[0]) for p in procs)
    return total, time.monotonic() - started


def bpftool(*args: str) -> object:
    return json.loads(subprocess.run(["bpftool", "--json", *args], check=True, capture_output=True, text=True).stdout)


def attached_programs(tracer_pid: int) -> dict[str, int]:
    """tracepoint name -> BPF program id, for the programs the tracer attached."""
    return {
        entry["tracepoint"]: entry["prog_id"]
        for entry in bpftool("perf", "list")
        if entry.get("pid") == tracer_pid and entry.get("fd_type") == "tracepoint"
    }


def program_counters(programs: dict[str, int]) -> dict[str, tuple[int, int]]:
    counters = {}
    for tracepoint, prog_id in programs.items():
        info = bpftool("prog", "show", "id", str(prog_id))
        counters[tracepoint] = (info.get("run_time_ns", 0), info.get("run_cnt", 0))
    return counters


def cost(before: dict, after: dict, tracepoint: str) -> str:
    (t0, n0), (t1, n1) = before[tracepoint], after[tracepoint]
    runs = n1 - n0
    return f"{(t1 - t0) / runs:6.0f} ns over {runs:7d} runs" if runs else f"{'(not run)':>25}"


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS_PER_SECOND


def anon_rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no RssAnon for pid {pid}")


def settled_cpu(pid: int, most_s: float = 30.0) -> float:
    """The consumer's CPU once it has drained the storm's backlog (it burns under 5% of a core)."""
    deadline = time.monotonic() + most_s
    last = cpu_seconds(pid)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = cpu_seconds(pid)
        if now - last < 0.025:
            return now
        last = now
    return last


@dataclass
class Session:
    """What a consumer reported when it stopped."""

    events: dict[str, int]
    lost: int
    stdout: str = ""


@dataclass
class Consumer:
    name: str
    process: subprocess.Popen
    stderr: IO[str]
    stdout: IO[str] | None
    programs: dict[str, int] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.process.pid


@contextmanager
def consumer(name: str, *extra: str, keep_stdout: bool = False, env: dict[str, str] | None = None) -> Iterator[Consumer]:
    """A live consumer, attached and ready: its programs loaded and (watch) the snapshot fed."""
    stderr = tempfile.TemporaryFile(mode="w+")
    stdout = tempfile.TemporaryFile(mode="w+") if keep_stdout else None
    process = subprocess.Popen([sys.executable, *CONSUMERS[name], *extra],
                               stdout=stdout or subprocess.DEVNULL, stderr=stderr, text=True, env=env)
    running = Consumer(name, process, stderr, stdout)
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                stderr.seek(0)
                raise RuntimeError(f"{name} did not attach: {stderr.read().strip()}")
            time.sleep(0.3)
            stderr.seek(0)
            programs = attached_programs(process.pid)
            if programs and programs == running.programs and (name == "trace" or "watching" in stderr.read()):
                break
            running.programs = programs
        yield running
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        process.wait(timeout=300)


def stop(running: Consumer) -> Session:
    running.process.send_signal(signal.SIGTERM)
    running.process.wait(timeout=300)
    running.stderr.seek(0)
    summary = running.stderr.read()
    # The stats line is a log line: time, level and component before its "-- ".
    match = re.search(r"(?:^|: )-- (.*?); lost (\d+)", summary, re.MULTILINE)
    if not match:
        raise RuntimeError(f"no stats from {running.name}: {summary.strip()}")
    events = {k: int(v) for k, v in (item.rsplit(" ", 1) for item in match.group(1).split(", ")) if k != "no"}
    stdout = ""
    if running.stdout is not None:
        running.stdout.seek(0)
        stdout = running.stdout.read()
    return Session(events, int(match.group(2)), stdout)


@dataclass
class Alternation:
    ratio: float
    cpu_per_process_us: float
    cpu_per_event_us: float
    rate: float = 0.0  # processes a second with the consumer attached


def alternate(options: argparse.Namespace) -> dict[str, tuple[list[Alternation], int]]:
    """Rounds of a run with each consumer in turn, a run without any after each: for
    each consumer, its runs and the events its sessions lost."""
    print(f"{options.alternations} rounds of: {', '.join(f'{options.duration:.0f} s with {name}' for name in CONSUMERS)},"
          f" each followed by {options.duration:.0f} s without", flush=True)
    without = [fork_storm(options.duration, options.loops)]
    results: dict[str, tuple[list[Alternation], int]] = {name: ([], 0) for name in CONSUMERS}
    for _ in range(options.alternations):
        for name in CONSUMERS:
            (forks, seconds), cpu, session = traced_storm(name, options)
            without.append(fork_storm(options.duration, options.loops))
            events = sum(session.events.values())
            baseline = (rate(without[-2]) + rate(without[-1])) / 2
            run = Alternation(rate((forks, seconds)) / baseline, cpu / forks * 1e6, cpu / events * 1e6 if events else 0.0)
            runs, lost = results[name]
            runs.append(run)
            results[name] = (runs, lost + session.lost)
            print(f"  {name:<6} without {rate(without[-2]):7.0f}/s, with {rate((forks, seconds)):7.0f}/s:"
                  f" ratio {run.ratio:.3f}; consumer CPU {cpu:5.1f} s = {run.cpu_per_process_us:5.1f} us/process,"
                  f" {run.cpu_per_event_us:5.1f} us/event ({events} {'records' if name == 'kernel' else 'events'})",
                  flush=True)
    print(f"  without {rate(without[-1]):7.0f}/s")
    return results


def traced_storm(name: str, options: argparse.Namespace, env: dict[str, str] | None = None,
                 mode: str = "fork") -> tuple[tuple[int, float], float, Session]:
    """One storm (forkloop's `mode`) with `name` attached: (forks, seconds), the consumer's
    CPU seconds over the storm and the drain of its backlog, and what it reported."""
    with consumer(name, env=env) as running:
        cpu_before = cpu_seconds(running.pid)
        traced = fork_storm(options.duration, options.loops, mode)
        cpu = settled_cpu(running.pid) - cpu_before
        return traced, cpu, stop(running)


def rate(run: tuple[int, float]) -> float:
    return run[0] / run[1]


def idle_cpu_per_second(options: argparse.Namespace) -> float:
    """`watch`'s CPU a second with no storm: its polls, sweeps and evaluations, the floor of
    every per-process figure of a storm (at R processes a second, this over R each)."""
    with consumer("watch") as running:
        time.sleep(2)  # past the start-up's settling
        before = cpu_seconds(running.pid)
        time.sleep(options.duration)
        cpu = cpu_seconds(running.pid) - before
        stop(running)
    return cpu / options.duration


def exec_storms(options: argparse.Namespace) -> dict[str, dict[str, tuple[list[Alternation], int]]]:
    """Rounds of an exec storm with each of EXEC_CONSUMERS attached in turn and one run
    without after each, for each of EXEC_MODES: for each mode and consumer, its runs (CPU
    per exec'd process) and the events its sessions lost."""
    results: dict[str, dict[str, tuple[list[Alternation], int]]] = {}
    for mode in EXEC_MODES:
        print(f"{options.alternations} rounds of {options.duration:.0f} s of `forkloop {mode}` with each of"
              f" {', '.join(EXEC_CONSUMERS)}, each followed by {options.duration:.0f} s without", flush=True)
        without = [fork_storm(options.duration, options.loops, mode)]
        results[mode] = {name: ([], 0) for name in EXEC_CONSUMERS}
        for _ in range(options.alternations):
            for name in EXEC_CONSUMERS:
                (execs, seconds), cpu, session = traced_storm(name, options, mode=mode)
                without.append(fork_storm(options.duration, options.loops, mode))
                events = sum(session.events.values())
                baseline = (rate(without[-2]) + rate(without[-1])) / 2
                runs, lost = results[mode][name]
                runs.append(Alternation(rate((execs, seconds)) / baseline, cpu / execs * 1e6,
                                        cpu / events * 1e6 if events else 0.0, rate((execs, seconds))))
                results[mode][name] = (runs, lost + session.lost)
                print(f"  {mode} {name:<6} without {baseline:6.0f}/s, with {rate((execs, seconds)):6.0f}/s:"
                      f" ratio {runs[-1].ratio:.3f}; CPU {cpu:5.2f} s = {runs[-1].cpu_per_process_us:5.1f} us"
                      f" per exec'd process ({events} {'records' if name == 'kernel' else 'events'})", flush=True)
    return results


@dataclass
class LongRun:
    forks: list[tuple[int, int]]  # (processes forked so far, anon RSS) at the start and after each chunk
    execs: list[tuple[int, int]]  # (processes exec'd so far, anon RSS) after each chunk
    cpu_per_exec_us: float  # watch's CPU per exec'd process over the exec storm
    lost: int


def long_watch(options: argparse.Namespace) -> LongRun:
    """watch under PROCESSES forks, then more exec'd children than the table holds."""
    print(f"watch under {options.processes} processes, {options.duration:.0f} s chunks, then an exec storm"
          f" of {EXECS_PAST_CAP} processes", flush=True)
    previous_stats = STATS_SYSCTL.read_text().strip()
    STATS_SYSCTL.write_text("1")
    samples = []
    try:
        with consumer("watch") as running:
            samples.append((0, anon_rss_bytes(running.pid)))
            before = program_counters(running.programs)
            processes = 0
            while processes < options.processes:
                processes += fork_storm(options.duration, options.loops)[0]
                samples.append((processes, anon_rss_bytes(running.pid)))
                print(f"  {processes:9d} processes: anon RSS {samples[-1][1] / 2**20:6.1f} MiB", flush=True)
            after_forks = program_counters(running.programs)
            cpu_before = settled_cpu(running.pid)
            exec_samples, execs, seconds = [], 0, 0.0
            while execs < EXECS_PAST_CAP:
                chunk, chunk_s = fork_storm(options.duration, options.loops, "exec")
                execs, seconds = execs + chunk, seconds + chunk_s
                exec_samples.append((execs, anon_rss_bytes(running.pid)))
                print(f"  {execs:9d} exec'd: anon RSS {exec_samples[-1][1] / 2**20:6.1f} MiB", flush=True)
            cpu_per_exec_us = (settled_cpu(running.pid) - cpu_before) / execs * 1e6
            after = program_counters(running.programs)
            session = stop(running)
    finally:
        STATS_SYSCTL.write_text(previous_stats)
    print(f"  exec storm: {execs / seconds:7.0f} fork+exec/s for {seconds:.0f} s;"
          f" watch CPU {cpu_per_exec_us:.1f} us per exec'd process")
    print(f"  events: {sum(session.events.values())} ({', '.join(f'{k} {v}' for k, v in session.events.items())}),"
          f" lost {session.lost}")
    print("  BPF cost per event (kernel.bpf_stats_enabled), fork storm | exec storm:")
    for tracepoint in sorted(running.programs):
        print(f"    {tracepoint:<22} {cost(before, after_forks, tracepoint)} | {cost(after_forks, after, tracepoint)}")
    return LongRun(samples, exec_samples, cpu_per_exec_us, session.lost)


@dataclass
class Replay:
    cpu_per_event_us: float  # of a recording with every process by pid (`trace --record`)
    cpu_per_process_us: float
    events: int
    watch_events: int  # of `watch --record`'s recording, short lives tallied
    watch_processes: int
    same_alerts: bool  # `watch --replay` of `watch --record`'s recording, as the live session's
    lost: int  # by the live sessions


def replay(options: argparse.Namespace) -> Replay:
    """`watch --replay` of a recorded storm: `watch --record`'s against the live session
    that recorded it, and `trace --record`'s (every process by pid, the replay's heaviest
    load) for the CPU it costs per event."""
    print(f"watch --record, then trace --record, over {options.duration:.0f} s each; then --replay", flush=True)
    with tempfile.TemporaryDirectory(prefix="spawnwatch-bench-") as directory:
        recordings = {name: Path(directory) / f"{name}.msgpack" for name in ("watch", "trace")}
        sessions = {}
        for name, recording in recordings.items():
            with consumer(name, "--record", str(recording), keep_stdout=name == "watch") as running:
                fork_storm(options.duration, options.loops)
                settled_cpu(running.pid)
                sessions[name] = stop(running)
        _, replayed = replay_cpu(recordings["watch"])
        watch_events, watch_processes = events_and_processes(recordings["watch"])
        events, processes = events_and_processes(recordings["trace"])
        head = recording_head(recordings["trace"], Path(directory) / "head.msgpack")
        # Each a fraction of a second, timed in clock ticks: the median of a few.
        startup_s = statistics.median(replay_cpu(head)[0] for _ in range(REPLAYS))
        spent_s = statistics.median(replay_cpu(recordings["trace"])[0] for _ in range(REPLAYS))
    live = sessions["watch"]
    same = alerts_of(replayed) == alerts_of(live.stdout)
    per_event = (spent_s - startup_s) / events * 1e6
    per_process = (spent_s - startup_s) / processes * 1e6
    print(f"  trace's {events} events of {processes} processes replayed: {per_event:.2f} us CPU each,"
          f" {per_process:.2f} us per process (medians of {REPLAYS}: {spent_s:.2f} s, start-up {startup_s:.2f} s)")
    print(f"  watch's {watch_events} events of {watch_processes} processes replayed: alerts"
          f" {'the same as' if same else 'DIFFERENT from'} the live session's ({len(alerts_of(live.stdout))} records)")
    return Replay(per_event, per_process, events, watch_events, watch_processes, same,
                  sum(session.lost for session in sessions.values()))


def events_and_processes(recording: Path) -> tuple[int, int]:
    """Process events in a recording (of any format), and the processes they tell (a
    fork, brief or exec_brief one, a tally `count`)."""
    events = processes = 0
    for record in read_records(recording):
        item = from_record(record)
        if isinstance(item, Event):
            events += 1
            processes += item.count if isinstance(item, (Brief, Tally)) else isinstance(item, Fork)
    return events, processes


def recording_head(recording: Path, head: Path) -> Path:
    """`head`, written with the records of `recording` before its first process event: its
    replay is the interpreter's and the replay's start-up alone."""
    with open(head, "wb") as out:
        for record in read_records(recording):
            if isinstance(from_record(record), Event):
                break
            out.write(msgpack.packb(record))
    return head


def replay_cpu(recording: Path, env: dict[str, str] | None = None) -> tuple[float, str]:
    """CPU seconds of `watch --replay` (user + system) and its output."""
    before = os.times()
    done = subprocess.run([sys.executable, "-m", "spawnwatch", "watch", "--replay", str(recording), "--json"],
                          capture_output=True, text=True, check=True, env=env)
    after = os.times()
    return (after.children_user - before.children_user) + (after.children_system - before.children_system), done.stdout


def alerts_of(output: str) -> list[tuple]:
    """What detection decided (memory, measured live only, left out)."""
    alerts = [json.loads(line) for line in output.splitlines() if '"kind":"alert"' in line.replace(" ", "")]
    return [(a["state"], a["rule"], a["severity"], a["signature"], a["spawner"]["pid"], tuple(a["pids"]), a["time"])
            for a in alerts]


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    if not ready_to_storm():
        return 1
    print(f"fork storm: {options.loops} loops; {os.cpu_count()} cores", flush=True)
    try:
        alternations = alternate(options)
        idle = idle_cpu_per_second(options)
        execs = exec_storms(options)
        long_run = long_watch(options)
        replayed = replay(options)
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    lost = (sum(lost for _, lost in alternations.values())
            + sum(lost for by_consumer in execs.values() for _, lost in by_consumer.values())
            + long_run.lost + replayed.lost)

    print("\nsummary (medians of the alternations; attach, kernel and probe are the floor under watch)")
    for name, (runs, _) in alternations.items():
        print(f"  {name + ':':<7} throughput with / without {statistics.median(r.ratio for r in runs):.3f}"
              f" ({', '.join(f'{r.ratio:.3f}' for r in runs)});"
              f" consumer CPU {statistics.median(r.cpu_per_process_us for r in runs):5.1f} us/process,"
              f" {statistics.median(r.cpu_per_event_us for r in runs):5.2f} us/event")
    print(f"  watch idle: {idle * 1e3:.1f} ms CPU a second (polls, sweeps, evaluations: the floor under"
          f" every per-process figure)")
    for mode, by_consumer in execs.items():
        print(f"  {mode} storm ({'argv the same in every child' if mode == 'exec' else 'argv each its own'}):")
        for name, (runs, _) in by_consumer.items():
            print(f"    {name + ':':<7} throughput with / without {statistics.median(r.ratio for r in runs):.3f}"
                  f" ({', '.join(f'{r.ratio:.3f}' for r in runs)});"
                  f" CPU {statistics.median(r.cpu_per_process_us for r in runs):5.1f} us per exec'd process"
                  f" ({', '.join(f'{r.cpu_per_process_us:.1f}' for r in runs)})"
                  + (f", of which idle {statistics.median(idle / r.rate * 1e6 for r in runs):.1f}"
                     if name == "watch" else ""))
    forks, exec_samples = long_run.forks, long_run.execs
    at_cap = [rss for processes, rss in exec_samples if processes >= TABLE_CAP]
    print(f"  watch anon RSS: {forks[0][1] / 2**20:.0f} MiB at start, {forks[-1][1] / 2**20:.0f} MiB after"
          f" {forks[-1][0]} forked processes (most {max(rss for _, rss in forks) / 2**20:.0f}),"
          f" {at_cap[0] / 2**20 if at_cap else 0:.0f} MiB after {TABLE_CAP} exec'd ({exec_samples[-1][0]} exec'd:"
          f" {exec_samples[-1][1] / 2**20:.0f} MiB)")
    print(f"  watch CPU per exec'd process (exec storm): {long_run.cpu_per_exec_us:.1f} us")
    print(f"  watch --replay: {replayed.cpu_per_event_us:.2f} us CPU per recorded event,"
          f" {replayed.cpu_per_process_us:.2f} per process ({replayed.events} events, every process by pid);"
          f" watch's own recording: {replayed.watch_events} events of {replayed.watch_processes} processes;"
          f" live == replay: {'yes' if replayed.same_alerts else 'NO'}")
    print(f"  lost events: {lost}")
    return exit_code(lost, replayed.same_alerts)


if __name__ == "__main__":
    sys.exit(main())
