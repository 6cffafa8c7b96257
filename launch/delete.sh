#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Delete the queued resource and its TPU node(s). Asks first unless --yes. What is in the bucket
# (checkpoints, TensorBoard) stays; the logs on the workers go with them.
#
# Usage: launch/delete.sh [--dry-run] [--yes]
# Needs TPU_PROJECT, TPU_ZONE, TPU_NAME.
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

SCRIPT_FLAGS="--yes -y"
parse_args "$@"
((${#ARGS[@]} == 0)) || die "delete.sh takes no arguments (got ${ARGS[*]})"
require_tpu
set_location

if ! dry_run && ! has_flag --yes && ! has_flag -y; then
  answer=""
  read -r -p "Delete queued resource $TPU_NAME and its TPU VMs ($TPU_ZONE, $TPU_PROJECT)? [y/N] " answer || true
  [[ "$answer" =~ ^[Yy]([Ee][Ss])?$ ]] || die "not deleted"
fi
# --force deletes the TPU node(s) first; --quiet skips gcloud's own prompt.
run_cmd gcloud compute tpus queued-resources delete "$TPU_NAME" "${GCLOUD_LOC[@]}" --force --quiet
