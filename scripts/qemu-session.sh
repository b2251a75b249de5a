#!/usr/bin/env bash
# `make qemu` as a user runs it, with a scripted session on its console instead
# of a person: wait until the runtime reports every example app running, then
# type `poweroff` at the console shell and expect the twin to power off and
# `make qemu` to exit cleanly. Fails naming what did not come, with the
# console's last lines. Bounded: QEMU_SESSION_TIMEOUT seconds (default 600).
set -euo pipefail
cd "$(dirname "$0")/.."
timeout_s=${QEMU_SESSION_TIMEOUT:-600}
apps=(blinky button thermostat counter publisher subscriber)
log=$(mktemp)
pid=""
# Its own process group (setsid), so a timeout ends QEMU too, not only make.
trap 'rm -f "$log"; [ -n "$pid" ] && kill -- -"$pid" 2>/dev/null || true' EXIT

coproc QEMU { exec setsid make --no-print-directory qemu 2>&1; }
# Our own copies of its pipes and pid: bash drops the coproc's variables when it ends.
pid=$QEMU_PID
exec {from}<&"${QEMU[0]}" {to}>&"${QEMU[1]}"
deadline=$((SECONDS + timeout_s))
running() { grep -c 'app running app="' "$log" || true; }
missing() {
  local app out=()
  for app in "${apps[@]}"; do grep -q "app running app=\"$app\"" "$log" || out+=("$app"); done
  echo "${out[*]}"
}
poweroff_sent=0
while ((SECONDS < deadline)); do
  if IFS= read -r -t 3 -u "$from" line; then
    printf '%s\n' "$line" >>"$log"
  elif (($? <= 128)); then
    break # make qemu ended
  fi
  if [ -z "$(missing)" ] && grep -q 'trellis-init: started console' "$log" \
    && ! grep -q 'reboot: Power down' "$log" && ((SECONDS - poweroff_sent >= 5)); then
    # Typed until the shell takes it (input before it set up the terminal is flushed).
    printf 'poweroff\n' >&"$to" || true
    poweroff_sent=$SECONDS
  fi
done
status=0
if ((SECONDS >= deadline)); then kill -- -"$pid" 2>/dev/null || true; fi
wait "$pid" || status=$?
pid=""
fail() {
  echo "qemu-session: $*; the console's last lines:" >&2
  tail -n 40 "$log" >&2
  exit 1
}
[ -z "$(missing)" ] || fail "not running within ${timeout_s} s: $(missing)"
grep -q 'reboot: Power down' "$log" || fail "the twin did not power off"
grep -q 'trellis-twin: powered off' "$log" || fail "make qemu did not end by itself"
((status == 0)) || fail "make qemu exited with $status"
echo "qemu-session: make qemu booted the twin, $(running) app starts (${apps[*]}), powered off"
