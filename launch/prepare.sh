#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Build a token store on every worker of the TPU, in the background, so this returns at once:
#   python -m headless_jax.prepare --config=CONFIG --out=$TPU_BUCKET/stores/STORE_NAME [overrides]
# The workers find each other through jax.distributed and each tokenises its share of the sources' units;
# re-running the same command builds only the shards still missing. Each worker appends its output to
# ~/headless_jax_logs/prepare-STORE_NAME.worker<id>.log. Then train with
#   launch/run.sh CONFIG -- --config.data.store=$TPU_BUCKET/stores/STORE_NAME
#
# Usage: launch/prepare.sh [--dry-run] CONFIG STORE_NAME [-- --config.key=value ...]
# Needs TPU_PROJECT, TPU_ZONE, TPU_NAME, TPU_BUCKET; optional HEADLESS_ENV.
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

parse_args "$@"
((${#ARGS[@]} == 2)) || die "usage: launch/prepare.sh CONFIG STORE_NAME [-- --config.key=value ...]"
require_tpu
require_bucket
config="${ARGS[0]}"
check_config "$config"
store_name="${ARGS[1]}"
check_name STORE_NAME "$store_name"
store="${TPU_BUCKET%/}/stores/$store_name"
set_location
set_nodes

start_on_all_workers "prepare-$store_name" "^$REMOTE_VENV/bin/python -u -m headless_jax[.]prepare" \
  -m headless_jax.prepare --config="$config" --out="$store" ${EXTRA_ARGS[@]+"${EXTRA_ARGS[@]}"}

cat >&2 <<MSG
Preparing $store on every worker.
  logs:   launch/logs.sh 0 prepare-$store_name
  resume: run this same command again (finished shards are kept)
  train:  launch/run.sh $config -- --config.data.store=$store
MSG
