#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Start a training run on every worker of the TPU, in the background, so this returns at once:
#   python -m headless_jax.main --config=CONFIG --workdir=$TPU_BUCKET/runs/RUN_NAME [overrides]
# Each worker appends its output to ~/headless_jax_logs/RUN_NAME.worker<id>.log (and points
# ~/headless_jax_logs/latest.log at it). Re-running the same command resumes from the workdir.
#
# Usage: launch/run.sh [--dry-run] CONFIG [RUN_NAME] [-- --config.key=value ...]
#   CONFIG    path relative to the repository root, e.g. configs/<exp>.py
#   RUN_NAME  workdir name under $TPU_BUCKET/runs (default: the config's file name)
# Needs TPU_PROJECT, TPU_ZONE, TPU_NAME, TPU_BUCKET; optional HEADLESS_ENV (e.g. "TPU_STDERR_LOG_LEVEL=2").
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

parse_args "$@"
((${#ARGS[@]} >= 1 && ${#ARGS[@]} <= 2)) || die "usage: launch/run.sh CONFIG [RUN_NAME] [-- --config.key=value ...]"
require_tpu
require_bucket
config="${ARGS[0]}"
check_config "$config"
config_file="${config%%:*}"
[[ -f "$REPO_ROOT/$config_file" ]] || echo "warning: $config_file is not in the local checkout; the workers must have it" >&2
default_name="$(basename "$config_file")"
run_name="${ARGS[1]:-${default_name%.py}}"
check_name RUN_NAME "$run_name"
workdir="${TPU_BUCKET%/}/runs/$run_name"
set_location
set_nodes

start_on_all_workers "$run_name" "$RUN_PATTERN" \
  -m headless_jax.main --config="$config" --workdir="$workdir" ${EXTRA_ARGS[@]+"${EXTRA_ARGS[@]}"}

cat >&2 <<MSG
Started $run_name (workdir $workdir).
  logs:        launch/logs.sh          (one worker: launch/logs.sh 0)
  tensorboard: tensorboard --logdir=$workdir
  stop:        launch/stop.sh          (SIGTERM: the run saves a checkpoint, then exits)
  resume:      run this same command again
MSG
