"""A live consumer that stops part way down spawnwatch's data path, so that
bench/forkstorm.py can tell what each stage costs the fork loops (the floor under
`watch`):

  kernel   the BPF programs attached and the ring handed back unread (the held
           forks still swept): what the kernel side costs, with the cheapest reader
  probe    every record decoded and completed as `watch` gets it, then dropped:
           the probe's share, no lineage, detection or output

It opens the probe as `watch` does and drains it in the one live loop
(`runner.live_batches`); it says "watching" on stderr once attached, and on
SIGTERM the stats line `watch` prints (for `kernel`, the records taken).

    sudo .venv/bin/python bench/partial_consumer.py probe
"""

from __future__ import annotations

import sys

from spawnwatch.runner import Stop, live_batches, open_probe, stats_line, stats_record

LEVELS = ("kernel", "probe")


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in LEVELS:
        print(f"usage: partial_consumer.py {{{','.join(LEVELS)}}}", file=sys.stderr)
        return 2
    level = argv[0]
    stop = Stop(None)
    records = 0
    with open_probe() as probe, stop.on_signals():
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
