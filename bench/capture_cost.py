"""Where `sys_enter_execve`'s time goes: the argv capture (bpf/exec.bpf.c's
sw_capture_argv) rebuilt one step at a time, each step a program of its own on the
tracepoint, timed by kernel.bpf_stats_enabled while `forkloop exec` loops run (one
per core; every child execs /bin/true with four arguments, as in bench/forkstorm.py).

Each step adds one piece of the capture's work to the one before:

  no-op           the program returns at once: the tracepoint's and the stats' own cost
  slot            the thread's exec slot looked up (the capture's first step)
  pointers        one read of the argv pointer array (33 pointers) from user memory
  slot written    one byte of the slot written: its first touch (4 KiB a slot, 1,024 slots)
  first string    the first argument read into the slot (bpf_probe_read_user_str)
  every string    every argument read, as the capture does: its reads, all of them

The last step is the floor under the capture with argv read at syscall entry (the only
time it can be: the exec replaces the memory it lives in); the probe's own program,
measured by bench/forkstorm.py, adds its slot's bookkeeping to it.

    sudo .venv/bin/python bench/capture_cost.py [--rounds 3] [--duration 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from forkstorm import STATS_SYSCTL, attached_programs, fork_storm, program_counters, ready_to_storm  # noqa: E402

STEPS = ("no-op", "slot", "pointers", "slot written", "first string", "every string")
TRACEPOINT = "sys_enter_execve"
BPF_DIR = Path(__file__).resolve().parent.parent / "bpf"
# The capture's own sizes, from the probe's header: argv's arguments and bytes, one
# argument's cap, the exec slots.
PROGRAM = r"""
#include "spawnwatch.h"
struct slot { char argv[SW_ARGV_BYTES]; };
BPF_ARRAY(slots, struct slot, SW_EXEC_SLOTS);

TRACEPOINT_PROBE(syscalls, sys_enter_execve)
{
	const char *const *argv = (const char *const *)args->argv;
	const char *pointers[SW_ARGV_MAX_ARGS + 1];
	__u32 index = (__u32)bpf_get_current_pid_tgid() % SW_EXEC_SLOTS;
	struct slot *slot;
	__u32 offset = 0;
	long len;

	if (STEP < 1)
		return 0;
	slot = slots.lookup(&index);
	if (!slot || STEP < 2)
		return 0;
	if (bpf_probe_read_user(pointers, sizeof(pointers), argv) || STEP < 3)
		return 0;
	if (STEP < 4) {
		slot->argv[0] = 1;
		return 0;
	}
	for (int i = 0; i < SW_ARGV_MAX_ARGS; i++) {
		if (!pointers[i] || offset > SW_ARGV_BYTES - SW_ARG_MAX_BYTES)
			break;
		len = bpf_probe_read_user_str(&slot->argv[offset], SW_ARG_MAX_BYTES, pointers[i]);
		if (len < 0 || STEP < 5)
			break;
		offset += len;
	}
	return 0;
}
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="runs of every step, the median reported (default 3)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of exec storm per run (default 5)")
    parser.add_argument("--loops", type=int, default=os.cpu_count() or 2,
                        help="forkloop exec loops (default: one per core)")
    options = parser.parse_args(argv)
    for name in ("rounds", "duration", "loops"):
        if getattr(options, name) <= 0:
            parser.error(f"--{name} must be above 0")
    return options


def step_ns(step: int, options: argparse.Namespace) -> float:
    """ns per run of the capture up to `step`, over one exec storm."""
    from bcc import BPF  # root only

    bpf = BPF(text=PROGRAM, cflags=[f"-I{BPF_DIR}", f"-DSTEP={step}"])
    try:
        programs = attached_programs(os.getpid())
        before = program_counters(programs)
        fork_storm(options.duration, options.loops, "exec")
        after = program_counters(programs)
    finally:
        bpf.cleanup()
    (t0, n0), (t1, n1) = before[TRACEPOINT], after[TRACEPOINT]
    if n1 == n0:
        raise RuntimeError(f"step {STEPS[step]!r}: {TRACEPOINT} never ran")
    return (t1 - t0) / (n1 - n0)


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    if not ready_to_storm():
        return 1
    previous = STATS_SYSCTL.read_text().strip()
    STATS_SYSCTL.write_text("1")
    runs: dict[str, list[float]] = {name: [] for name in STEPS}
    try:
        for _ in range(options.rounds):
            for step, name in enumerate(STEPS):  # the steps take turns: the machine drifts
                runs[name].append(step_ns(step, options))
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        STATS_SYSCTL.write_text(previous)
    print(f"{TRACEPOINT}, the argv capture step by step ({options.loops} `forkloop exec` loops,"
          f" {options.rounds} rounds of {options.duration:.0f} s; medians, ns per exec)")
    below = 0.0
    for name, values in runs.items():
        median = statistics.median(values)
        print(f"  {name:<13} {median:6.0f} ns  (+{median - below:5.0f}; {', '.join(f'{v:.0f}' for v in values)})")
        below = median
    return 0


if __name__ == "__main__":
    sys.exit(main())
