#!/usr/bin/env bash
# A venv for the unit tests under another interpreter: `make unit PYTHON=...`.
# Idempotent: reinstalls only when pyproject.toml changed since the last install.
set -euo pipefail
python=$1
venv=$2
repo=$(cd "$(dirname "$0")/.." && pwd)
if [ ! -x "$venv/bin/python" ]; then
    printf 'unit-venv: creating %s from %s\n' "$venv" "$python" >&2
    "$python" -m venv "$venv"
fi
stamp="$venv/.installed"
if [ ! -e "$stamp" ] || [ "$repo/pyproject.toml" -nt "$stamp" ]; then
    "$venv/bin/pip" install -q --disable-pip-version-check -e "${repo}[test]"
    touch "$stamp"
fi
