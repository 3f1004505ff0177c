"""Python source the root tests run as child processes (`python -c`), shared
between their scripts."""

# Opens a script: fork(then) starts a child that runs `then` and exits, and gives its pid.
FORK_THEN = """
import os

def fork(then):
    pid = os.fork()
    if pid == 0:
        then()
        os._exit(0)
    return pid
"""
