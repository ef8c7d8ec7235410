#!/usr/bin/env bash
# GPU check, one prepared run for a bare GPU machine: benchmarks/gpu_check.sh OUTDIR
#
# Needs only python with torch and transformers (no ray, polars, pyarrow, no network).
# Runs tilesweep from this source tree (PYTHONPATH), not from an install. If this
# transformers predates Molmo2 (or torchvision is missing), the wheels in .whl/ at the
# repository root are installed into a private folder first; without them it stops
# with one line. Writes OUTDIR/records.json, summary.json and summary.txt.
# Without CUDA it runs the tiny model with fewer repeats (a smoke test for CI).
set -euo pipefail

if [ "$#" -ne 1 ]; then
    echo "usage: $0 OUTDIR" >&2
    exit 2
fi
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="$1"
PY="${PYTHON:-python3}"
mkdir -p "$OUT"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1

if ! "$PY" -c "import torch, transformers" 2>/dev/null; then
    echo "gpu_check: $PY cannot import torch and transformers; run it with a python that has both (PYTHON=...)" >&2
    exit 3
fi

ready() { "$PY" -c "import transformers.models.molmo2, torchvision" 2>/dev/null; }
if ! ready; then
    if compgen -G "$ROOT/.whl/*.whl" >/dev/null; then
        DEPS="$(mktemp -d)"
        trap 'rm -rf "$DEPS"' EXIT
        echo "gpu_check: installing the wheels in .whl/ into $DEPS" >&2
        "$PY" -m pip install --quiet --no-index --no-deps --target "$DEPS" "$ROOT"/.whl/*.whl
        export PYTHONPATH="$ROOT:$DEPS${PYTHONPATH#"$ROOT"}"
    fi
    if ! ready; then
        have="$("$PY" -c 'import transformers; print(transformers.__version__)' 2>/dev/null || echo none)"
        echo "gpu_check: transformers $have has no Molmo2 or torchvision is missing; put a transformers>=5.24 wheel (and torchvision matching torch) in .whl/ and rerun" >&2
        exit 3
    fi
fi

"$PY" -c "import torch, transformers; print(f'gpu_check: torch {torch.__version__}, transformers {transformers.__version__}, cuda {torch.cuda.is_available()}')"
exec "$PY" "$ROOT/benchmarks/gpu_check.py" "$OUT"
