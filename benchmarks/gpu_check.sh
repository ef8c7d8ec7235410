#!/usr/bin/env bash
# GPU check, one prepared run for a bare GPU machine: benchmarks/gpu_check.sh [--cpu-smoke] OUTDIR
#
# Needs only a python with torch and torchvision (no ray, polars, pip or network): every
# other package comes from the wheels `make gpu-deps` put in .whl/ at the repository root
# (or TILESWEEP_WHEELS), unpacked into a private folder that goes first on PYTHONPATH.
# Runs tilesweep from this source tree. Stops with one line, before measuring anything,
# when a package is missing (exit 3) or there is no usable CUDA device and --cpu-smoke
# is not given (exit 4). Writes OUTDIR/records.json, summary.json, summary.txt and
# records.parquet (see benchmarks/gpu_check.py), then runs the tests marked gpu.
set -euo pipefail

usage() { echo "usage: $0 [--cpu-smoke] OUTDIR" >&2; exit 2; }
SMOKE=""
OUT=""
for arg in "$@"; do
    case "$arg" in
        --cpu-smoke) SMOKE="--cpu-smoke" ;;
        -*) usage ;;
        *) [ -z "$OUT" ] || usage; OUT="$arg" ;;
    esac
done
[ -n "$OUT" ] || usage
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-python3}"
WHEELS="${TILESWEEP_WHEELS:-$ROOT/.whl}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1

DEPS=""
if compgen -G "$WHEELS/*.whl" >/dev/null; then
    DEPS="$(mktemp -d)"
    trap 'rm -rf "$DEPS"' EXIT
    # A wheel is a zip of the installed files: unpacking is installing, minus scripts.
    "$PY" -c 'import sys, zipfile; [zipfile.ZipFile(w).extractall(sys.argv[1]) for w in sys.argv[2:]]' \
        "$DEPS" "$WHEELS"/*.whl
fi
export PYTHONPATH="$ROOT${DEPS:+:$DEPS}${PYTHONPATH:+:$PYTHONPATH}"

# Every missing or mismatched package, named on one line.
SMOKE="$SMOKE" "$PY" - <<'PYEOF' || exit $?
import os, sys
missing, notes = [], []
try:
    import torch
except Exception as exc:
    print(f"gpu_check: {sys.executable} cannot import torch ({type(exc).__name__}: {exc}); run it with a python "
          "that has torch (PYTHON=...)", file=sys.stderr)
    sys.exit(3)
major, minor = (int(p) for p in torch.__version__.split("+")[0].split(".")[:2])
try:
    import torchvision
    tv = tuple(int(p) for p in torchvision.__version__.split("+")[0].split(".")[:2])
    # torchvision 0.(m+15) is built for torch 2.m; a mismatched pair fails inside its C++ ops.
    if major == 2 and tv != (0, minor + 15):
        missing.append(f"torchvision 0.{minor + 15} for torch {torch.__version__} (found {torchvision.__version__})")
    else:
        torchvision.ops.nms(torch.zeros(1, 4), torch.zeros(1), 0.5)
except Exception as exc:
    missing.append(f"a torchvision that matches torch {torch.__version__} ({type(exc).__name__}: "
                   f"{' '.join(str(exc).split())[:120]})")
try:
    import transformers
    found = tuple(int(p) for p in transformers.__version__.split(".")[:2] if p.isdigit())
    if found < (5, 24):
        missing.append(f"transformers>=5.24 (found {transformers.__version__})")
    else:
        import transformers.models.molmo2  # noqa: F401  (the first model measured)
except Exception as exc:
    missing.append(f"transformers>=5.24 ({type(exc).__name__}: {' '.join(str(exc).split())[:120]})")
cuda = torch.cuda.is_available()
if cuda:
    try:
        import pynvml  # noqa: F401
    except Exception:
        missing.append("nvidia-ml-py (energy, clocks and the GPU's UUID)")
if missing:
    print(f"gpu_check: missing: {'; '.join(missing)}; run `make gpu-deps` on a machine with network and carry "
          ".whl to this one (see the README)", file=sys.stderr)
    sys.exit(3)
if not cuda and not os.environ.get("SMOKE"):
    print(f"gpu_check: no usable CUDA device (torch {torch.__version__}, built for CUDA {torch.version.cuda}, "
          "sees none); run it on a GPU machine, or pass --cpu-smoke for the CPU smoke test", file=sys.stderr)
    sys.exit(4)
if cuda:
    try:
        (torch.ones(1, device="cuda") + 1).item()
    except Exception as exc:
        print(f"gpu_check: the CUDA device does not work ({type(exc).__name__}: {' '.join(str(exc).split())[:160]})",
              file=sys.stderr)
        sys.exit(4)
PYEOF

mkdir -p "$OUT"
status=0
"$PY" "$ROOT/benchmarks/gpu_check.py" $SMOKE "$OUT" || status=$?
if [ -z "$SMOKE" ] && "$PY" -c "import pytest" 2>/dev/null; then
    # The tests that need CUDA (device streams, energy), where there is one.
    (cd "$ROOT" && "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/workers/test_timers.py \
        tests/workers/test_host.py) >"$OUT/gpu_tests.txt" 2>&1 || echo "gpu_check: tests marked gpu failed: see $OUT/gpu_tests.txt" >&2
    tail -n 1 "$OUT/gpu_tests.txt"
fi
exit "$status"
