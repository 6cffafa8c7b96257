#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Install headless_jax on every worker of the TPU: a Python venv made by uv (TPU images ship
# Python 3.10; the pinned JAX needs 3.11+), then either a git checkout of HEADLESS_REPO at
# HEADLESS_REF installed with `pip install -e .[tpu]`, or the wheel HEADLESS_WHEEL (gs://)
# installed with its [tpu] extra plus a copy of the local configs/ directory.
# Safe to re-run: it updates the checkout and reinstalls.
#
# Usage: launch/setup.sh [--dry-run]
# Needs TPU_PROJECT, TPU_ZONE, TPU_NAME and HEADLESS_REPO (optional HEADLESS_REF, default main)
# or HEADLESS_WHEEL; optional HEADLESS_PYTHON (default 3.12), HEADLESS_CONFIGS (wheel mode:
# the local configs directory to copy, default <repo>/configs).
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

parse_args "$@"
((${#ARGS[@]} == 0)) || die "setup.sh takes no arguments (got ${ARGS[*]})"
require_tpu
if [[ -z "${HEADLESS_WHEEL:-}" ]]; then
  require HEADLESS_REPO https://github.com/you/headless_jax.git
fi
set_location
set_nodes

venv="set -e; python3 -m pip install --user --quiet --upgrade uv; \$HOME/.local/bin/uv venv --quiet --seed --allow-existing --python $(quote "$HEADLESS_PYTHON") $REMOTE_VENV"
check="$REMOTE_VENV/bin/python -c 'import headless_jax, jax; print(\"headless_jax ready, jax\", jax.__version__)'"

if [[ -n "${HEADLESS_WHEEL:-}" ]]; then
  [[ "$HEADLESS_WHEEL" == gs://*.whl ]] || die "HEADLESS_WHEEL must be a gs:// path to a .whl (e.g. export HEADLESS_WHEEL=gs://my-bucket/wheels/headless_jax-0.1.0-py3-none-any.whl)"
  wheel="$(basename "$HEADLESS_WHEEL")"
  [[ "$wheel" =~ ^[A-Za-z0-9_.+-]+$ ]] || die "unexpected characters in the wheel name $wheel"
  configs="${HEADLESS_CONFIGS:-$REPO_ROOT/configs}"
  [[ -d "$configs" ]] || die "no configs directory at $configs (set HEADLESS_CONFIGS)"
  wheels="$REMOTE_REPO/wheels"
  # The second install replaces the package even when the wheel's version did not change.
  install="$venv; mkdir -p $wheels; gsutil -q cp $(quote "$HEADLESS_WHEEL") $wheels/; $REMOTE_VENV/bin/pip install --quiet \"${wheels}/${wheel}[tpu]\"; $REMOTE_VENV/bin/pip install --quiet --no-deps --force-reinstall $wheels/$wheel; $check"
  read -r -a ssh_flags <<<"${TPU_SSH_FLAGS:-}"
  for node in "${NODES[@]}"; do
    tpu_ssh "$node" all "$install"
    run_cmd gcloud compute tpus tpu-vm scp --recurse "$configs" "$node:headless_jax/" "${GCLOUD_LOC[@]}" --worker=all ${ssh_flags[@]+"${ssh_flags[@]}"}
  done
else
  repo="$(quote "${HEADLESS_REPO:-}")"
  install="$venv; if [ -d $REMOTE_REPO/.git ]; then git -C $REMOTE_REPO remote set-url origin $repo; else rm -rf $REMOTE_REPO; git clone --quiet $repo $REMOTE_REPO; fi; git -C $REMOTE_REPO fetch --quiet origin $(quote "$HEADLESS_REF"); git -C $REMOTE_REPO checkout --quiet --force --detach FETCH_HEAD; $REMOTE_VENV/bin/pip install --quiet -e \"${REMOTE_REPO}[tpu]\"; git -C $REMOTE_REPO log -1 --format='checked out %h %s'; $check"
  tpu_ssh_all "$install"
fi
echo "Next: launch/run.sh configs/<exp>.py [run-name] [-- --config.key=value ...]" >&2
