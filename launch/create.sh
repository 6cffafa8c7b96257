#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Request a TPU slice through a queued resource and wait until it is ACTIVE.
#
# Usage: launch/create.sh [--dry-run] [--no-wait]
# Needs TPU_PROJECT, TPU_ZONE, TPU_NAME, TPU_TYPE; optional TPU_RUNTIME, TPU_NUM_SLICES,
# TPU_SPOT=1 or TPU_RESERVED=1, TPU_CREATE_FLAGS, TPU_POLL_SECONDS (default 30).
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

SCRIPT_FLAGS="--no-wait"
parse_args "$@"
((${#ARGS[@]} == 0)) || die "create.sh takes no arguments (got ${ARGS[*]})"

require_tpu
require TPU_TYPE v4-32
case "$TPU_TYPE" in
  v5e-*) die "TPU_TYPE=$TPU_TYPE: the accelerator type of TPU v5e is v5litepod-N (e.g. export TPU_TYPE=v5litepod-${TPU_TYPE#v5e-})" ;;
esac
TPU_RUNTIME="${TPU_RUNTIME:-$(default_runtime "$TPU_TYPE")}"
set_location

cmd=(gcloud compute tpus queued-resources create "$TPU_NAME" "${GCLOUD_LOC[@]}"
  --accelerator-type="$TPU_TYPE" --runtime-version="$TPU_RUNTIME")
if ((TPU_NUM_SLICES > 1)); then
  cmd+=(--node-count="$TPU_NUM_SLICES" --node-prefix="$TPU_NAME")
else
  cmd+=(--node-id="$TPU_NAME")
fi
if is_true "$TPU_SPOT" && is_true "$TPU_RESERVED"; then
  die "TPU_SPOT and TPU_RESERVED are both set; choose one"
fi
is_true "$TPU_SPOT" && cmd+=(--spot)
is_true "$TPU_RESERVED" && cmd+=(--reserved)
read -r -a create_flags <<<"${TPU_CREATE_FLAGS:-}"
cmd+=(${create_flags[@]+"${create_flags[@]}"})
run_cmd "${cmd[@]}"

if dry_run || has_flag --no-wait; then
  dry_run && echo "# (waits for queued resource $TPU_NAME to become ACTIVE)"
  exit 0
fi

poll="${TPU_POLL_SECONDS:-30}"
start=$SECONDS
last=""
echo "Waiting for queued resource $TPU_NAME to become ACTIVE (Ctrl-C stops waiting, not the request)." >&2
while true; do
  state="$(gcloud compute tpus queued-resources describe "$TPU_NAME" "${GCLOUD_LOC[@]}" --format='value(state.state)')" ||
    state="(describe failed; retrying)"
  if [[ "$state" != "$last" ]]; then
    echo "$(date +%H:%M:%S) $TPU_NAME: $state ($(((SECONDS - start) / 60)) min)" >&2
    last="$state"
  fi
  case "$state" in
    ACTIVE) break ;;
    FAILED | SUSPENDING | SUSPENDED | DELETING)
      die "queued resource $TPU_NAME is $state; see: gcloud compute tpus queued-resources describe $TPU_NAME --zone=$TPU_ZONE --project=$TPU_PROJECT" ;;
  esac
  sleep "$poll"
done
echo "$TPU_NAME is ACTIVE. Next: launch/setup.sh" >&2
