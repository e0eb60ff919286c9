#!/usr/bin/env bash
# Train the deletion head on another machine (a GPU box) in one command, over ssh and scp only:
#   export -> copy -> venv with the `train` extra on HOST (made once) -> train --device auto
#   -> copy the head back -> `imgrank model import` (checked against this store, then activated).
# A failed step stops the run with one line naming it; the local store changes only in the last
# step, and only if the head passes the import's checks. However it ends (a failed step, Ctrl-C),
# the job folder on HOST (the exported labels, the head) is removed.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: scripts/remote-train.sh [OPTIONS] HOST [-- TRAIN-OPTIONS...]

Train the imgrank head on HOST (anything ssh reaches: user@host, an ssh_config alias) and
import it here. HOST needs Python 3.10+ with venv; nothing else (the first run installs torch
and imgrank into a venv under --remote-dir, later runs reuse it).

Options:
  --remote-python PY   Python on HOST that creates the venv (default: python3)
  --remote-dir DIR     working folder on HOST, relative to its home (~/DIR means the same);
                       letters, digits and . _ - + / only (default: .imgrank-remote)
  --device DEV         torch device on HOST: auto (cuda if there is one), cuda, cpu (default: auto)
  --torch SPEC         what pip installs first on HOST (default: torch==2.13.0)
  --python PY          local Python that has imgrank (default: python3)
  -p PORT, -i KEY, -F CONFIG, -o OPTION
                       passed to ssh and scp (also IMGRANK_SSH_OPTS, e.g. "-o Port=2222")
  -v, --verbose        say each step as it starts
  -h, --help           this text
TRAIN-OPTIONS after -- go to `imgrank train` on HOST, e.g. -- --seed 3 --hidden 512,128

Example:
  scripts/remote-train.sh gpu-box
  scripts/remote-train.sh -p 2222 -i ~/.ssh/gpu --remote-python python3.11 me@10.0.0.7
EOF
}

REMOTE_PY=python3
REMOTE_DIR=.imgrank-remote
DEVICE=auto
TORCH_SPEC=torch==2.13.0
LOCAL_PY=python3
VERBOSE=0
SSH_OPTS=(-o BatchMode=yes)
# shellcheck disable=SC2206  # word splitting is the point: "-o A=1 -o B=2"
[[ -n "${IMGRANK_SSH_OPTS:-}" ]] && SSH_OPTS+=(${IMGRANK_SSH_OPTS})
HOST=
TRAIN_ARGS=()

die_usage() { echo "remote-train: $1 (see --help)" >&2; exit 2; }
need_arg() { [[ $# -ge 2 && -n "$2" ]] || die_usage "$1 needs a value"; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        --remote-python) need_arg "$@"; REMOTE_PY=$2; shift 2 ;;
        --remote-dir) need_arg "$@"; REMOTE_DIR=$2; shift 2 ;;
        --device) need_arg "$@"; DEVICE=$2; shift 2 ;;
        --torch) need_arg "$@"; TORCH_SPEC=$2; shift 2 ;;
        --python) need_arg "$@"; LOCAL_PY=$2; shift 2 ;;
        -p) need_arg "$@"; SSH_OPTS+=(-o "Port=$2"); shift 2 ;;  # ssh says -p, scp -P: -o suits both
        -i | -F | -o) need_arg "$@"; SSH_OPTS+=("$1" "$2"); shift 2 ;;
        -v | --verbose) VERBOSE=1; shift ;;
        -h | --help) usage; exit 0 ;;
        --) shift; TRAIN_ARGS=("$@"); break ;;
        -*) die_usage "unknown option $1" ;;
        *) [[ -z "$HOST" ]] || die_usage "one HOST only (got $HOST and $1)"; HOST=$1; shift ;;
    esac
done
[[ -n "$HOST" ]] || die_usage "no HOST given"
# The folder goes into remote shell commands and scp paths: plain characters only, so no quoting
# can go wrong on HOST (a space and `$(...)` once ran code through pip's launcher there). `~/` is
# taken off: ssh and scp both start in HOST's home, so a relative path means one folder to both.
plain='^(~/)?[A-Za-z0-9._/+][A-Za-z0-9._/+-]*$'
[[ "$REMOTE_DIR" =~ $plain ]] ||
    die_usage "--remote-dir '$REMOTE_DIR': use letters, digits and . _ - + / only (and ~/ at the start)"
[[ "$REMOTE_DIR" == "~/"* ]] && REMOTE_DIR=${REMOTE_DIR:2}
[[ -n "${REMOTE_DIR//[\/.]/}" ]] || die_usage "--remote-dir '$REMOTE_DIR' names no folder of its own"

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/imgrank-remote.XXXXXX")
LOG="$WORK/step.log"
HOST_JOB=0  # 1 once the job folder on HOST may exist: from then on every exit removes it there
cleanup() {
    rm -rf "$WORK"
    if [[ $HOST_JOB == 1 ]]; then on_host "rm -rf $JOB" >/dev/null 2>&1 </dev/null || true; fi
}
trap cleanup EXIT
trap 'exit 130' INT  # Ctrl-C and kill still run the EXIT trap: the labels do not stay on HOST
trap 'exit 143' TERM HUP

q() { printf '%q' "$1"; }  # one word for the remote shell
RDIR=$(q "$REMOTE_DIR")
VENV="$RDIR/venv"
JOB="$RDIR/job"

# step NAME COMMAND...: run it with its output in a log; on failure, one line and stop.
# With SHOW=1 its standard output goes to ours (the training report, the import's result).
step() {
    local name=$1 rc=0
    shift
    [[ $VERBOSE == 1 ]] && echo "remote-train: $name" >&2
    if [[ ${SHOW:-0} == 1 ]]; then "$@" 2>"$LOG" || rc=$?; else "$@" >"$LOG" 2>&1 || rc=$?; fi
    if [[ $rc != 0 ]]; then
        local why
        why=$(grep -v '^[[:space:]]*$' "$LOG" | tail -n 1 | cut -c1-300 || true)
        echo "remote-train: step '$name' failed (exit $rc)${why:+: $why}" >&2
        exit 1
    fi
}

on_host() { ssh "${SSH_OPTS[@]}" "$HOST" "$1"; }

build_wheel() {
    # From a copy of the source, so the checkout gets no build/ or egg-info folders.
    # (Called as `step`'s command, so `set -e` is off in here: each command is checked.)
    local isolation=(--no-build-isolation)
    "$LOCAL_PY" -c 'import setuptools' 2>/dev/null || isolation=()
    mkdir -p "$WORK/src" "$WORK/dist" &&
        tar -C "$SRC" --exclude=__pycache__ -cf - pyproject.toml README.md imgrank | tar -C "$WORK/src" -xf - &&
        "$LOCAL_PY" -m pip wheel -q --no-deps "${isolation[@]}" -w "$WORK/dist" "$WORK/src"
}

step "export labels" "$LOCAL_PY" -m imgrank -q export "$WORK/labels.parquet"
[[ -f "$SRC/pyproject.toml" ]] || { echo "remote-train: step 'build imgrank' failed: no pyproject.toml in $SRC" >&2; exit 1; }
step "build imgrank" build_wheel
WHEEL=$(cd "$WORK/dist" && ls imgrank-*.whl)
WHEEL_SUM=$(sha256sum "$WORK/dist/$WHEEL" | cut -c1-64)

step "connect to $HOST" on_host "mkdir -p $JOB && rm -f $JOB/*"
HOST_JOB=1  # (not before: a host that cannot be reached holds nothing, and is not tried again)
step "copy labels to $HOST" scp -q "${SSH_OPTS[@]}" "$WORK/labels.parquet" "$WORK/dist/$WHEEL" "$HOST:$REMOTE_DIR/job/"
step "create venv on $HOST" on_host "test -x $VENV/bin/python || $(q "$REMOTE_PY") -m venv $VENV"
step "install torch on $HOST" on_host \
    "$VENV/bin/python -c 'import torch' 2>/dev/null || $VENV/bin/python -m pip install -q $(q "$TORCH_SPEC")"
# The same imgrank as here (by the wheel's hash): its `train` extra, then exactly this build.
step "install imgrank on $HOST" on_host "test \"\$(cat $VENV/imgrank-wheel.sha256 2>/dev/null)\" = $WHEEL_SUM || {
    $VENV/bin/python -m pip install -q $JOB/$WHEEL'[train]' &&
    $VENV/bin/python -m pip install -q --force-reinstall --no-deps $JOB/$WHEEL &&
    echo $WHEEL_SUM > $VENV/imgrank-wheel.sha256; }"
train_cmd="$VENV/bin/imgrank train --data $JOB/labels.parquet --device $(q "$DEVICE") --out $JOB/head.safetensors"
for a in "${TRAIN_ARGS[@]}"; do train_cmd+=" $(q "$a")"; done
SHOW=1 step "train on $HOST" on_host "$train_cmd"
step "copy head from $HOST" scp -q "${SSH_OPTS[@]}" "$HOST:$REMOTE_DIR/job/head.safetensors" "$WORK/"
SHOW=1 step "import head" "$LOCAL_PY" -m imgrank model import "$WORK/head.safetensors"
