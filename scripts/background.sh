#!/usr/bin/env bash
# Run one command in the background at the lowest CPU and I/O priority while
# another runs in the foreground; stop the background one when the foreground
# one ends, and exit with the foreground's status.
#   background.sh LOG BACKGROUND_COMMAND... -- FOREGROUND_COMMAND...
# `make test` builds the twin's kernel this way (scripts/twin-kernel.sh
# --cache-only): the Rust builds before it leave part of the two cores idle
# (a crate that every other one waits for, a link), and the niced kernel build
# takes that time instead of its own 10 minutes at the end. The build that
# needs the kernel waits for it (twin-kernel.sh's lock); if the background
# build failed, that one builds it again and shows why.
set -euo pipefail
usage="usage: background.sh LOG BACKGROUND_COMMAND... -- FOREGROUND_COMMAND..."
log=${1:?$usage}
shift
background=()
while [ $# -gt 0 ] && [ "$1" != -- ]; do
  background+=("$1")
  shift
done
if [ "${1:-}" != -- ] || [ ${#background[@]} -eq 0 ] || [ $# -lt 2 ]; then
  echo "$usage" >&2
  exit 2
fi
shift
mkdir -p "$(dirname "$log")"
echo "background: ${background[*]} (output in $log)"
# Its own session, so that stopping it stops what it started (make, the compilers).
# A new session is also a new scheduler autogroup where the kernel has them
# (sched_autogroup_enabled): nice then only ranks processes inside the group,
# and the group competes with the foreground's as an equal. So the group itself
# gets nice 19 (/proc/self/autogroup; nothing to do where there is none).
# shellcheck disable=SC2016 # expanded by the inner shell
setsid bash -c '{ echo 19 >/proc/self/autogroup; } 2>/dev/null || true; exec nice -n 19 ionice -c 3 "$@"' \
  background "${background[@]}" >"$log" 2>&1 &
pid=$!
trap 'kill -TERM -- -"$pid" 2>/dev/null || true' EXIT
"$@"
