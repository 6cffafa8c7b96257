#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Show the state of the queued resource and of its TPU node(s); with --runs, also whether a
# training process runs on each worker and the last line of its log.
#
# Usage: launch/status.sh [--dry-run] [--runs]
# Needs TPU_PROJECT, TPU_ZONE, TPU_NAME.
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

SCRIPT_FLAGS="--runs"
parse_args "$@"
((${#ARGS[@]} == 0)) || die "status.sh takes no arguments (got ${ARGS[*]})"
require_tpu
set_location
set_nodes

run_cmd gcloud compute tpus queued-resources describe "$TPU_NAME" "${GCLOUD_LOC[@]}" \
  --format='table(name.basename():label=QUEUED_RESOURCE,state.state:label=STATE)' ||
  echo "(no queued resource $TPU_NAME in $TPU_ZONE)"
for node in "${NODES[@]}"; do
  run_cmd gcloud compute tpus tpu-vm describe "$node" "${GCLOUD_LOC[@]}" \
    --format='table(name.basename():label=NODE,acceleratorType:label=TYPE,state,health,runtimeVersion)' ||
    echo "(no TPU node $node)"
done
if has_flag --runs; then
  tpu_ssh_all "$REMOTE_WORKER_ID; if pgrep -f \"$RUN_PATTERN\" >/dev/null; then echo \"worker \$W: running | \$(tail -n 1 $REMOTE_LOGS/latest.log)\"; else echo \"worker \$W: no run\"; fi"
fi
