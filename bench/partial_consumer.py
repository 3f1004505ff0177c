"""A live consumer that stops part way down spawnwatch's data path, so that
bench/forkstorm.py can tell what each stage costs the fork loops (the floor under
`watch`):

  attach   a program that returns at once on each tracepoint the probe uses, and
           no reader: what attaching alone costs (the tracepoints' dispatch)
  kernel   the BPF programs attached and the ring handed back unread (the held
           forks still swept): what the kernel side costs, with the cheapest reader
  probe    every record decoded and completed as `watch` gets it, then dropped:
           the probe's share, no lineage, detection or output

Past `attach`, it opens the probe as `watch` does and drains it in the one live
loop (`runner.live_batches`).  It says "watching" on stderr once attached, and on
SIGTERM the stats line `watch` prints (for `kernel`, the records taken).

    sudo .venv/bin/python bench/partial_consumer.py probe
"""

from __future__ import annotations

import re
import sys
import time

from spawnwatch.probe import program_text
from spawnwatch.runner import POLL_INTERVAL, Stop, live_batches, open_probe, stats_line, stats_record

LEVELS = ("attach", "kernel", "probe")
NOOP_PROGRAM = "int noop(void *ctx) { return 0; }"


def probe_tracepoints() -> list[str]:
    """category:name of every tracepoint the probe's programs attach to."""
    return [f"{category}:{name}" for category, name in
            re.findall(r"TRACEPOINT_PROBE\((\w+),\s*(\w+)\)", program_text())]


def attach_only(stop: Stop) -> dict:
    from bcc import BPF  # root only, like the probe

    bpf = BPF(text=NOOP_PROGRAM)
    try:
        for tracepoint in probe_tracepoints():
            bpf.attach_tracepoint(tp=tracepoint, fn_name=b"noop")
        print("watching", file=sys.stderr, flush=True)
        while not stop:
            time.sleep(POLL_INTERVAL)
    finally:
        bpf.cleanup()
    return {"events": {}, "lost": 0}


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in LEVELS:
        print(f"usage: partial_consumer.py {{{','.join(LEVELS)}}}", file=sys.stderr)
        return 2
    level = argv[0]
    stop = Stop(None)
    if level == "attach":
        with stop.on_signals():
            print(stats_line(attach_only(stop)), file=sys.stderr, flush=True)
        return 0
    records = 0
    with open_probe(compact_lives=True) as probe, stop.on_signals():  # as `watch` opens it
        if level == "kernel":
            def hand_back(taken: list[bytes]) -> list:
                nonlocal records
                records += len(taken)
                return []

            probe.decode_batch = hand_back  # the ring's records, counted and dropped undecoded
        print("watching", file=sys.stderr, flush=True)
        for _batch in live_batches(probe, stop):
            pass
        stats = stats_record(probe)
    if level == "kernel":
        stats["events"] = {"records": records}
    print(stats_line(stats), file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
