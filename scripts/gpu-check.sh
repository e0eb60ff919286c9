#!/usr/bin/env bash
# The GPU figures of docs/remote-gpu.md in one run, on a machine with an NVIDIA GPU, from the repo root:
#   1. scripts/bench_embed.py --device cuda: 12-megapixel JPEGs, the real-shape ViT-S/16 random-weight
#      model; the decode-only ceiling, the model-only rate and the full `scan --device cuda` rate.
#   2. `imgrank train --data` on CUDA with 25,000 labelled rows of the real feature width (515: 256-d
#      image + 256-d file name + 3 metadata), the prior's feature columns and a library sample, as a
#      real export has them; wall time including start-up, as a user runs it.
# Makes a venv ($VENV, default .venv-gpu) with torch==2.13.0 and imgrank if it has none, unless PY names
# a Python that already has torch and imgrank's dependencies (a GPU machine without internet: imgrank
# is then run from this checkout). Prints both tables and writes bench-out/gpu-bench_embed.json and
# bench-out/gpu-train.json.
#
#   bash scripts/gpu-check.sh                       # on the GPU machine: a few minutes, most of it setup
#   PY=python3 bash scripts/gpu-check.sh            # with that machine's own torch, no install
#   DEVICE=cpu N=24 bash scripts/gpu-check.sh       # the same paths on a CPU, to check the script
#   EMBED=0 ...                                     # step 2 alone (training)
#   PROFILE=1 ...                                   # also profile the training run a second time
#                                                   # (cProfile, bench-out/gpu-train.prof)
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE=${DEVICE:-cuda}
N=${N:-1000}
ROWS=${ROWS:-25000}
VENV=${VENV:-.venv-gpu}
OUT=bench-out
mkdir -p "$OUT"

if [[ -n "${PY:-}" ]]; then
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
    # Bytecode, as a pip-installed torch and imgrank have it: an image whose packages ship none (or
    # cannot write it) would otherwise compile ~1,000 modules, ~2 s, in every timed start-up.
    unset PYTHONDONTWRITEBYTECODE
    export PYTHONPYCACHEPREFIX="${PYTHONPYCACHEPREFIX:-$PWD/$OUT/pycache}"
    "$PY" -c 'import torch, torch.nn, pyarrow.parquet, imgrank.cli, imgrank.train, imgrank.export'
else
    if [[ ! -x "$VENV/bin/imgrank" ]]; then
        echo "== setting up $VENV" >&2
        python3 -m venv "$VENV"
        "$VENV/bin/pip" install -q torch==2.13.0
        "$VENV/bin/pip" install -q -e '.[dev]'
    fi
    PY="$VENV/bin/python"
fi
"$PY" -c 'import os, torch; print("torch", torch.__version__, "|",
    torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device", "|", os.cpu_count(), "cores")'

if [[ "${EMBED:-1}" == 1 ]]; then
    echo "== 1. embedding $N photos with --device $DEVICE: decode ceiling, model alone, full scan"
    "$PY" scripts/bench_embed.py --device "$DEVICE" -n "$N" --out "$OUT/gpu-bench_embed.json"
fi

echo "== 2. imgrank train --data: $ROWS rows of width 515, --device $DEVICE"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The rows of bench_train.py (clustered vectors, a non-linear label at 1:4, 5% noise), written as
# `imgrank export` writes a real store: the labelled rows with the prior's feature columns, then the
# folder's library sample (LIBRARY_SAMPLE unlabelled rows that shape the head's L2 prior). So `train`
# does what it does on a real export: the recipe twice (with and without the prior's features) in
# the library-shaped space. PRIOR=0 leaves the prior's columns out, as an older export has them.
"$PY" - "$work/labels.parquet" "$ROWS" "${PRIOR:-1}" <<'PY'
import json, sys
import numpy as np, pyarrow as pa, pyarrow.parquet as pq
sys.path.insert(0, "scripts")
from bench_train import IMAGE_DIM, NAME_DIM, make_data
from imgrank.export import SCHEMA_KEY
from imgrank.model import LIBRARY_SAMPLE, feature_spec
from imgrank.prior import HEAD_FEATURES, load_prompts, spec_record

path, n, with_prior = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
x, y, _ = make_data(n + LIBRARY_SAMPLE)
spec = feature_spec("bench-random-vectors", IMAGE_DIM, NAME_DIM)
if with_prior:
    spec["prior"] = spec_record(load_prompts())
def vectors(a):
    return pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(a, np.float32).ravel()), a.shape[1])
# the prior's features: its logit follows the label loosely, the pixel cues are noise
prior = np.random.default_rng(1).normal(size=(n, len(HEAD_FEATURES))).astype(np.float32)
prior[:, 0] += 1.5 * y[:n]
columns = {
    "sha256": [f"{i:064x}" for i in range(n + LIBRARY_SAMPLE)],
    "label": ["delete" if v else "keep" for v in y[:n]] + [None] * LIBRARY_SAMPLE,
    "image": vectors(x[:, :IMAGE_DIM]),
    "name": vectors(x[:, IMAGE_DIM : IMAGE_DIM + NAME_DIM]),
    **{m: pa.array(x[:, IMAGE_DIM + NAME_DIM + i], pa.float32()) for i, m in enumerate(spec["meta"])},
}
if with_prior:
    nulls = [None] * LIBRARY_SAMPLE
    columns |= {f: pa.array(list(prior[:, i]) + nulls, pa.float32()) for i, f in enumerate(HEAD_FEATURES)}
pq.write_table(pa.table(columns).replace_schema_metadata({SCHEMA_KEY: json.dumps(spec).encode()}), path)
PY
start=$(date +%s.%N)
"$PY" -m imgrank -q train --data "$work/labels.parquet" --device "$DEVICE" --out "$work/head.safetensors" \
    --json >"$OUT/gpu-train.json"
end=$(date +%s.%N)
if [[ -n "${PROFILE:-}" ]]; then
    "$PY" -m cProfile -o "$OUT/gpu-train.prof" -m imgrank -q train --data "$work/labels.parquet" \
        --device "$DEVICE" --out "$work/head2.safetensors" >/dev/null
fi
"$PY" - "$start" "$end" "$OUT/gpu-train.json" "$DEVICE" <<'PY'
import json, sys
start, end, path, device = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3], sys.argv[4]
run = json.load(open(path))
run["wall_seconds_with_startup"] = round(end - start, 2)
json.dump(run, open(path, "w"), indent=2)
ap = run.get("metrics", {}).get("mlp", {}).get("ap")
print(f"train --data on {device}: {end - start:.2f} s wall including start-up "
      f"(training itself {run.get('seconds')} s), validation AP {ap}; target < 10 s")
PY
