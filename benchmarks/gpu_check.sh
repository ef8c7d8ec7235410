#!/usr/bin/env bash
# GPU check, one prepared run for a bare GPU machine: benchmarks/gpu_check.sh OUTDIR
#
# Needs only python with torch and transformers (no ray, polars, pyarrow, no network).
# Runs tilesweep from this source tree (PYTHONPATH), not from an install. If this
# transformers predates Molmo2 (or torchvision is missing), the wheels in .whl/ at the
# repository root (or TILESWEEP_WHEELS) are installed into a private folder first; without them it stops
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
WHEELS="${TILESWEEP_WHEELS:-$ROOT/.whl}"
mkdir -p "$OUT"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1

# One interpreter start per check: 0 ready, 3 no torch/transformers, 4 no Molmo2 or torchvision.
probe() {
    "$PY" - <<'PYEOF'
import sys
try:
    import torch, transformers
except Exception as exc:
    print(f"gpu_check: {type(exc).__name__}: {exc}", file=sys.stderr)
    sys.exit(3)
try:
    import torchvision, transformers.models.molmo2
except Exception:
    print(transformers.__version__)
    sys.exit(4)
print(f"gpu_check: torch {torch.__version__}, transformers {transformers.__version__}, cuda {torch.cuda.is_available()}")
if tuple(int(p) for p in transformers.__version__.split(".")[:2] if p.isdigit()) < (5, 24):
    print(f"gpu_check: warning: transformers {transformers.__version__} is older than 5.24, the version tilesweep "
          "is tested with", file=sys.stderr)
PYEOF
}

status=0
report="$(probe)" || status=$?
if [ "$status" -eq 4 ] && compgen -G "$WHEELS/*.whl" >/dev/null; then
    DEPS="$(mktemp -d)"
    trap 'rm -rf "$DEPS"' EXIT
    echo "gpu_check: installing the wheels in $WHEELS into $DEPS" >&2
    "$PY" -m pip install --quiet --no-index --no-deps --target "$DEPS" "$WHEELS"/*.whl
    export PYTHONPATH="$ROOT:$DEPS${PYTHONPATH#"$ROOT"}"
    status=0
    report="$(probe)" || status=$?
fi
case "$status" in
    0) echo "$report" ;;
    3) echo "gpu_check: $PY cannot import torch and transformers; run it with a python that has both (PYTHON=...)" >&2
       exit 3 ;;
    4) echo "gpu_check: transformers $report has no Molmo2 or torchvision is missing; put a transformers>=5.24 wheel (and torchvision matching torch) in the wheel folder and rerun" >&2
       exit 3 ;;
    *) echo "gpu_check: the environment check failed (exit $status)" >&2
       exit 3 ;;
esac

exec "$PY" "$ROOT/benchmarks/gpu_check.py" "$OUT"
