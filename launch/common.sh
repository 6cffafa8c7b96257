# shellcheck shell=bash
# shellcheck disable=SC2034  # the variables here are used by the scripts that source this file
# Defaults and helpers shared by the launch/ scripts. Sourced, never run.
#
# Environment (each script checks the ones it needs):
#   TPU_PROJECT     GCP project                         e.g. my-project
#   TPU_ZONE        zone of the TPU                     e.g. us-central2-b
#   TPU_NAME        queued resource and node name       e.g. headless-v4-32
#   TPU_TYPE        accelerator type                    e.g. v4-32, v5litepod-16
#   TPU_RUNTIME     runtime version (default: by generation, see default_runtime)
#   TPU_NUM_SLICES  number of slices (default 1; >1 = multi-slice, nodes $TPU_NAME-0..N-1)
#   TPU_SPOT=1 / TPU_RESERVED=1   spot or reserved capacity (default: on-demand)
#   TPU_CREATE_FLAGS  extra flags for `queued-resources create` (e.g. --network=... --internal-ips)
#   TPU_SSH_FLAGS   extra flags for `tpu-vm ssh/scp` (e.g. --tunnel-through-iap)
#   TPU_BUCKET      gs:// bucket (or prefix) for workdirs: runs go to $TPU_BUCKET/runs/<name>
#   HEADLESS_REPO   git URL to clone on the workers     e.g. https://github.com/you/headless_jax.git
#   HEADLESS_REF    git branch, tag or commit (default main)
#   HEADLESS_WHEEL  gs:// path of a built wheel (instead of HEADLESS_REPO)
#   HEADLESS_PYTHON Python version of the workers' venv (default 3.12)
#   HEADLESS_ENV    extra KEY=VALUE words put in the training process' environment
#   HEADLESS_CONFIGS  wheel mode: local configs directory copied to the workers (default <repo>/configs)
#   TPU_POLL_SECONDS  create.sh: seconds between state checks (default 30)
#   TPU_STOP_TIMEOUT  stop.sh: seconds to wait for the run to exit after SIGTERM (default 600)
#   LOG_LINES       logs.sh: lines of history shown before following (default 100)
#   DRY_RUN=1       same as --dry-run: print each command instead of running it

LAUNCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(dirname "$LAUNCH_DIR")"

TPU_NUM_SLICES="${TPU_NUM_SLICES:-1}"
TPU_SPOT="${TPU_SPOT:-0}"
TPU_RESERVED="${TPU_RESERVED:-0}"
HEADLESS_REF="${HEADLESS_REF:-main}"
HEADLESS_PYTHON="${HEADLESS_PYTHON:-3.12}"
DRY_RUN="${DRY_RUN:-0}"

# Paths on the workers; $HOME is expanded there, not here.
# shellcheck disable=SC2016
REMOTE_REPO='$HOME/headless_jax'
# shellcheck disable=SC2016
REMOTE_VENV='$HOME/headless_jax_venv'
# shellcheck disable=SC2016
REMOTE_LOGS='$HOME/headless_jax_logs'
# Sets W to the worker's index in its slice (TPU VM metadata; the hostname elsewhere).
# shellcheck disable=SC2016
REMOTE_WORKER_ID='W=$(curl -sf -m 5 -H Metadata-Flavor:Google http://metadata.google.internal/computeMetadata/v1/instance/attributes/agent-worker-number || hostname)'
# pgrep/pkill pattern of a training process started by run.sh. Anchored at the venv's python so it
# never matches the ssh shell whose command line mentions the module.
RUN_PATTERN="^$REMOTE_VENV/bin/python -u -m headless_jax[.]main"

ARGS=()        # positional arguments left after the flags
EXTRA_ARGS=()  # arguments after `--` (and any --config.* flag)
SCRIPT_FLAGS=""   # a script's own flags, set after sourcing this file (e.g. "--no-wait")
GIVEN_FLAGS=" "

die() {
  echo "error: $*" >&2
  exit 1
}

usage() {  # the script's header comment
  sed -n '2,/^[^#]/{/^# shellcheck/d;/^#/s/^# \{0,1\}//p;}' "$0"
}

is_true() {
  case "${1,,}" in 1 | true | yes | on) return 0 ;; *) return 1 ;; esac
}

dry_run() { is_true "$DRY_RUN"; }

# require NAME EXAMPLE: one-line error naming the variable and an example value.
require() {
  if [[ -z "${!1:-}" ]]; then
    die "$1 is not set (e.g. export $1=$2)"
  fi
}

require_tpu() {
  require TPU_PROJECT my-project
  require TPU_ZONE us-central2-b
  require TPU_NAME headless-v4-32
  [[ "$TPU_NUM_SLICES" =~ ^[1-9][0-9]*$ ]] || die "TPU_NUM_SLICES must be a positive integer (e.g. export TPU_NUM_SLICES=2)"
}

# parse_args "$@": handles --dry-run, --help and the flags in SCRIPT_FLAGS; fills ARGS and EXTRA_ARGS.
parse_args() {
  while (($#)); do
    case "$1" in
      --dry-run) DRY_RUN=1 ;;
      -h | --help) usage; exit 0 ;;
      --) shift; EXTRA_ARGS+=("$@"); break ;;
      --config.*) EXTRA_ARGS+=("$1") ;;
      -*)
        [[ " $SCRIPT_FLAGS " == *" $1 "* ]] || die "unknown option $1 (see $(basename "$0") --help)"
        GIVEN_FLAGS+="$1 " ;;
      *) ARGS+=("$1") ;;
    esac
    shift
  done
}

has_flag() { [[ "$GIVEN_FLAGS" == *" $1 "* ]]; }

# quote WORD: WORD as one shell word (single-quoted unless it is plainly safe).
quote() {
  local s="$1" q="'\\''"
  if [[ "$s" =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then
    printf '%s' "$s"
  else
    printf "'%s'" "${s//\'/$q}"
  fi
}

# print_cmd ARGS...: one line, `+ ` then the command with each word quoted (--flag='value').
print_cmd() {
  local line="+" a
  for a in "$@"; do
    if [[ "$a" =~ ^(--[A-Za-z0-9-]+=)(.*)$ ]]; then
      line+=" ${BASH_REMATCH[1]}$(quote "${BASH_REMATCH[2]}")"
    else
      line+=" $(quote "$a")"
    fi
  done
  printf '%s\n' "$line"
}

# run_cmd ARGS...: prints the command; runs it unless dry-run.
run_cmd() {
  if dry_run; then
    print_cmd "$@"
  else
    print_cmd "$@" >&2
    "$@"
  fi
}

default_runtime() {
  case "$1" in
    v6e-*) echo v2-alpha-tpuv6e ;;
    v5p-*) echo v2-alpha-tpuv5 ;;
    v5litepod-*) echo v2-alpha-tpuv5-lite ;;
    v2-* | v3-* | v4-*) echo tpu-ubuntu2204-base ;;
    *) die "no default runtime for TPU_TYPE=$1 (e.g. export TPU_RUNTIME=tpu-ubuntu2204-base)" ;;
  esac
}

# The TPU nodes: $TPU_NAME, or $TPU_NAME-0 .. $TPU_NAME-(N-1) for N slices.
NODES=()
set_nodes() {
  local i
  NODES=()
  if ((TPU_NUM_SLICES == 1)); then
    NODES=("$TPU_NAME")
  else
    for ((i = 0; i < TPU_NUM_SLICES; i++)); do NODES+=("$TPU_NAME-$i"); done
  fi
}

GCLOUD_LOC=()
set_location() { GCLOUD_LOC=(--zone="$TPU_ZONE" --project="$TPU_PROJECT"); }

# tpu_ssh NODE WORKER COMMAND: run COMMAND (one line of bash) on WORKER (a number or all) of NODE.
tpu_ssh() {
  local ssh_flags=()
  read -r -a ssh_flags <<<"${TPU_SSH_FLAGS:-}"
  run_cmd gcloud compute tpus tpu-vm ssh "$1" "${GCLOUD_LOC[@]}" --worker="$2" "${ssh_flags[@]}" --command="$3"
}

# tpu_ssh_all COMMAND: run COMMAND on every worker of every slice.
tpu_ssh_all() {
  local node
  for node in "${NODES[@]}"; do tpu_ssh "$node" all "$1"; done
}

# start_on_all_workers NAME PATTERN ARG...: on every worker of every slice where no process matches PATTERN
# (pgrep -f), start `python -u ARG...` in the background in its own session, appending its output to
# $REMOTE_LOGS/NAME.worker$W.log and pointing $REMOTE_LOGS/latest.log at it.
start_on_all_workers() {
  local name="$1" pattern="$2" words="" arg remote env_words log
  shift 2
  for arg in "$@"; do words+=" $(quote "$arg")"; done
  log="$REMOTE_LOGS/$name.worker\$W.log"
  remote="set -e; mkdir -p $REMOTE_LOGS; cd $REMOTE_REPO; $REMOTE_WORKER_ID"
  remote+="; if pgrep -f \"$pattern\" >/dev/null; then echo \"worker \$W: a run is still going; launch/stop.sh stops it\" >&2; exit 1; fi"
  remote+="; echo \"=== \$(date -u +%FT%TZ) launch/$(basename "$0") $name\" >>\"$log\""
  env_words="${HEADLESS_ENV:+env $HEADLESS_ENV }"
  remote+="; nohup setsid $env_words$REMOTE_VENV/bin/python -u$words >>\"$log\" 2>&1 </dev/null &"
  remote+=" echo \"worker \$W: started pid \$!, log $log\"; ln -sfn \"$log\" $REMOTE_LOGS/latest.log"
  tpu_ssh_all "$remote"
}

# require_bucket: TPU_BUCKET is set and a gs:// URL (workers read and write there).
require_bucket() {
  require TPU_BUCKET gs://my-bucket
  [[ "$TPU_BUCKET" == gs://?* ]] || die "TPU_BUCKET must be a gs:// URL (e.g. export TPU_BUCKET=gs://my-bucket)"
}

# check_config CONFIG: relative to the repository root (the workers run from their own checkout).
check_config() {
  [[ "$1" != /* ]] || die "give CONFIG relative to the repository root (e.g. configs/base.py): the workers run from their own checkout"
}

# check_name LABEL NAME: NAME is usable in a path and a log file name.
check_name() {
  [[ "$2" =~ ^[A-Za-z0-9._-]+$ ]] || die "$1 may only hold letters, digits, '.', '_' and '-' (got $2)"
}
