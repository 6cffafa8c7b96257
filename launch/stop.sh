#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Stop the run on every worker gracefully: SIGTERM to the training process (it saves a checkpoint,
# then exits), then wait up to TPU_STOP_TIMEOUT seconds (default 600) for it to end. With several
# slices, every slice is signalled before the waiting starts.
#
# Usage: launch/stop.sh [--dry-run] [--kill]
#   --kill  SIGKILL whatever still runs after the wait (the last checkpoint may be lost)
# Needs TPU_PROJECT, TPU_ZONE, TPU_NAME.
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

SCRIPT_FLAGS="--kill"
parse_args "$@"
((${#ARGS[@]} == 0)) || die "stop.sh takes no arguments (got ${ARGS[*]})"
require_tpu
timeout="${TPU_STOP_TIMEOUT:-600}"
[[ "$timeout" =~ ^[0-9]+$ ]] || die "TPU_STOP_TIMEOUT must be a number of seconds (e.g. export TPU_STOP_TIMEOUT=600)"
set_location
set_nodes

# -o: only the oldest match, the main process (not the loader workers it may have forked).
signal="if pkill -TERM -o -f \"$RUN_PATTERN\"; then echo \"worker \$W: sent SIGTERM\"; else echo \"worker \$W: no run\"; fi"
if has_flag --kill; then
  leftover="pkill -KILL -f \"$RUN_PATTERN\" || true; echo \"worker \$W: killed after ${timeout}s\""
else
  leftover="echo \"worker \$W: still running after ${timeout}s; launch/stop.sh --kill ends it\" >&2; exit 1"
fi
wait_exit="for i in \$(seq $timeout); do pgrep -f \"$RUN_PATTERN\" >/dev/null || break; sleep 1; done; if pgrep -f \"$RUN_PATTERN\" >/dev/null; then $leftover; else echo \"worker \$W: stopped\"; fi"

if ((${#NODES[@]} == 1)); then
  tpu_ssh_all "$REMOTE_WORKER_ID; $signal; $wait_exit"
else
  tpu_ssh_all "$REMOTE_WORKER_ID; $signal"
  tpu_ssh_all "$REMOTE_WORKER_ID; $wait_exit"
fi
