#!/usr/bin/env bash
# Run one command in the background while another runs in the foreground.
#   background.sh LOG BACKGROUND_COMMAND... -- FOREGROUND_COMMAND...
#       The background command runs at the lowest CPU and I/O priority and is
#       stopped when the foreground one ends; the exit status is the foreground's.
#       `make test` builds the twin's kernel this way (scripts/twin-kernel.sh
#       --cache-only): the Rust builds before it leave part of the two cores idle
#       (a crate that every other one waits for, a link), and the niced kernel
#       build takes that time instead of its own 9 minutes at the end. The build
#       that needs the kernel waits for it (twin-kernel.sh's lock); if the
#       background build failed, that one builds it again and shows why.
#   background.sh --wait LOG BACKGROUND_COMMAND... -- FOREGROUND_COMMAND...
#       Both are jobs of equal priority: when the foreground one ends, wait for the
#       background one and print its output; the exit status is non-zero if either
#       failed. `make test` runs the host's tests this way beside the twin's
#       stories, whose QEMU leaves a third of the two cores idle.
# Output of the background command: LOG.
set -euo pipefail
usage="usage: background.sh [--wait] LOG BACKGROUND_COMMAND... -- FOREGROUND_COMMAND..."
wait=false
if [ "${1:-}" = --wait ]; then
  wait=true
  shift
fi
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
# Its own process group (job control, `set -m`), so that stopping it stops what it
# started (make, the compilers). Not its own session: a new session is a new scheduler
# autogroup where the kernel has them (sched_autogroup_enabled), and nice only ranks
# processes inside one autogroup; the groups compete as equals, so a niced job in a
# session of its own takes half the CPU from the foreground.
set -m
if $wait; then
  "${background[@]}" >"$log" 2>&1 &
else
  nice -n 19 ionice -c 3 "${background[@]}" >"$log" 2>&1 &
fi
set +m
pid=$!
trap 'kill -TERM -- -"$pid" 2>/dev/null || true' EXIT
status=0
"$@" || status=$?
$wait || exit "$status"

if [ "$status" -ne 0 ]; then
  echo "background: $* failed (exit $status); stopping ${background[*]}" >&2
  exit "$status"
fi
echo "background: waiting for ${background[*]}"
bg_status=0
wait "$pid" || bg_status=$?
trap - EXIT
echo "background: the output of ${background[*]} ($log):"
cat "$log"
if [ "$bg_status" -ne 0 ]; then
  echo "background: ${background[*]} failed (exit $bg_status); its output is above and in $log" >&2
  exit "$bg_status"
fi
