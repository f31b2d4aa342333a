#!/usr/bin/env bash
# The test command of the README (after set-up): the whole suite, unit then contract tests.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python -m pytest "$@"
