#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Follow (tail -F) the training log of one worker, or of all workers with each line prefixed by
# its worker. Ctrl-C stops following; the run goes on.
#
# Usage: launch/logs.sh [--dry-run] [WORKER] [RUN_NAME]
#   WORKER    worker index, or all (default)
#   RUN_NAME  a run's log (default: the latest run started on each worker)
# Needs TPU_PROJECT, TPU_ZONE, TPU_NAME; optional LOG_LINES (lines of history, default 100).
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

parse_args "$@"
((${#ARGS[@]} <= 2)) || die "usage: launch/logs.sh [WORKER] [RUN_NAME]"
require_tpu
worker="${ARGS[0]:-all}"
[[ "$worker" =~ ^([0-9]+|all)$ ]] || die "WORKER must be a worker index or all (got $worker)"
run_name="${ARGS[1]:-}"
[[ "$run_name" =~ ^[A-Za-z0-9._-]*$ ]] || die "unexpected characters in RUN_NAME $run_name"
lines="${LOG_LINES:-100}"
[[ "$lines" =~ ^[0-9]+$ ]] || die "LOG_LINES must be a number (e.g. export LOG_LINES=100)"
set_location
set_nodes

if [[ -n "$run_name" ]]; then log="$REMOTE_LOGS/$run_name.worker*.log"; else log="$REMOTE_LOGS/latest.log"; fi
follow() {  # NODE
  if [[ "$worker" == all ]]; then
    tpu_ssh "$1" all "$REMOTE_WORKER_ID; tail -n $lines -F $log | sed -u \"s/^/[$1 w\$W] /\""
  else
    tpu_ssh "$1" "$worker" "tail -n $lines -F $log"
  fi
}
if ((${#NODES[@]} == 1)) || dry_run; then
  for node in "${NODES[@]}"; do follow "$node"; done
else
  for node in "${NODES[@]}"; do follow "$node" & done
  wait
fi
