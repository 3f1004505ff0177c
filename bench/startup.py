"""One start of `spawnwatch trace --json` under PYTHON (argv[1], default this one), ended
at its ready line: the command farm-bench times to compare two trees' start-up.

    farm-bench -n 7 --vs "python3 bench/startup.py <before>/.venv/bin/python" \
        -- python3 bench/startup.py <after>/.venv/bin/python
"""

from __future__ import annotations

import signal
import subprocess
import sys


def main() -> int:
    python = sys.argv[1] if len(sys.argv) > 1 else sys.executable
    trace = subprocess.Popen([python, "-m", "spawnwatch", "trace", "--json"], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True)
    ready = trace.stdout.readline()
    trace.send_signal(signal.SIGINT)
    trace.wait(timeout=30)
    return 0 if '"kind":"ready"' in ready else 1


if __name__ == "__main__":
    sys.exit(main())
