#!/usr/bin/env bash
# Stops the control plane that scripts/cluster/up.sh DIR started: SIGTERM, then
# SIGKILL after RF_STOP_TIMEOUT seconds (default 5). Scheduler and
# controller-manager go first, then kube-apiserver, then etcd. Idempotent; DIR
# (state and logs) is left in place: up.sh wipes it on the next start.
#
#   scripts/cluster/down.sh DIR
set -euo pipefail

me="scripts/cluster/down.sh"
{ [ $# -eq 1 ] && [ -n "$1" ]; } || { echo "usage: $me DIR" >&2; exit 1; }
dir=$(realpath -m -- "$1")
pids_file="$dir/pids"
stop_timeout=${RF_STOP_TIMEOUT:-5}

[ -f "$pids_file" ] || { echo "$me: nothing to stop ($pids_file absent)" >&2; exit 0; }

# ours PID: the process is alive and its command line mentions DIR (so a pid
# reused by an unrelated process after a reboot is never signalled).
ours() {
  local pid=$1
  [ -r "/proc/$pid/cmdline" ] || return 1
  tr '\0' ' ' < "/proc/$pid/cmdline" | grep -qF -- "$dir/"
}

pid_of() { awk -v n="$1" '$1 == n { print $2 }' "$pids_file"; }

# stop NAME...: TERM all of them together, then KILL whoever outlives the timeout.
stop() {
  local name pid live=() deadline
  for name in "$@"; do
    for pid in $(pid_of "$name"); do
      if ours "$pid"; then
        kill -TERM "$pid" 2>/dev/null || true
        live+=("$name:$pid")
      fi
    done
  done
  [ ${#live[@]} -gt 0 ] || return 0
  deadline=$(( $(date +%s) + stop_timeout ))
  while [ "$(date +%s)" -lt "$deadline" ]; do
    local still=()
    for entry in "${live[@]}"; do
      ours "${entry#*:}" && still+=("$entry")
    done
    [ ${#still[@]} -gt 0 ] || { echo "== stopped ${live[*]}" >&2; return 0; }
    sleep 0.2
  done
  for entry in "${live[@]}"; do
    if ours "${entry#*:}"; then
      echo "== ${entry%%:*} (pid ${entry#*:}) ignored SIGTERM for ${stop_timeout}s: SIGKILL" >&2
      kill -KILL "${entry#*:}" 2>/dev/null || true
    fi
  done
  # Reap: wait until the killed processes are really gone (up.sh may reuse ports at once).
  for _ in $(seq 50); do
    local any=0
    for entry in "${live[@]}"; do ours "${entry#*:}" && any=1; done
    [ "$any" = 1 ] || break
    sleep 0.1
  done
  echo "== stopped ${live[*]}" >&2
}

stop kube-scheduler kube-controller-manager
stop kube-apiserver
stop etcd
