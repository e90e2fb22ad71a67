#!/usr/bin/env bash
# `scripts/pip-quiet.sh PIP ARGS...`: PIP ARGS with -q, and without the lines nobody setting up can act on:
# pip's "WARNING: Location '...' is ignored" (a find-links or index location in the machine's pip config that
# does not exist here: one line per package, ~300 in a fresh `make setup`) and setuptools' editable-install
# notice (a 10-line BuildBackendWarning block for `pip install -e .`). Real errors and other warnings pass;
# the exit status is pip's.
set -uo pipefail
pip=$1
shift
{ "$pip" "$@" -q 2>&1 1>&3 3>&- | awk '
  /^WARNING: Location .* is ignored: it is neither a file nor a directory\.?$/ { next }
  /BuildBackendWarning: Editable installation\./ { block = 1; next }
  block && /^  / { if ($0 ~ /with strategy, WheelFile/) block = 0; next }
  { block = 0; print; fflush() }' >&2; } 3>&1
