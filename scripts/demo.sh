#!/usr/bin/env bash
# The README's main job: set up, serve CRI with a backend, run a demo pod through it, tear down.
# Today the backend is `fake` (in memory); the runc backend replaces it when it lands.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${CRIADAPT_VENV:-.venv}
BACKEND=${BACKEND:-fake}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet -e .
work=$(mktemp -d)
sock="$work/criadapt.sock"
"$VENV/bin/criadapt" serve --backend="$BACKEND" --listen "unix://$sock" \
    --root "$work/root" --state "$work/state" &
server=$!
trap 'kill -TERM $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$work"' EXIT
"$VENV/bin/python" scripts/demo_pod.py "unix://$sock"
