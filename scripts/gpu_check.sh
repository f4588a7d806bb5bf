#!/usr/bin/env bash
# How to run: bash scripts/gpu_check.sh [args for python -m bench.gpu_check]
#
# The GPU check, in about 3 minutes on an H200:
#   1. pytest tests -m cuda        (the CUDA tests; skipped, with the reason, without CUDA)
#   2. python -m bench.gpu_check   (5 timed epochs of the default config on synthetic data per
#      backend and variant: torch:cuda eager / cuda_graph / torch_compile=reduce-overhead,
#      numpy:cuda on CuPy, jax:cuda step by step / jax_scan (needs jax[cuda12]); epoch / GEMM-only
#      ratio, fixed-cost floor, compile time and quality flags; CSV + report)
# Logs, the CSV and the report go to $OUT when it is set, else to a new temp dir (printed).
# Without CUDA it runs a tiny CPU pass of step 2 and exits 0.
#
# Assumes a Python with torch, numpy and pytest: $PYTHON, else python3. No CIFAR-10 is
# needed (the data is synthetic, of the real shapes). If `import torch` fails, it tries
# `pip install -e ".[test]"` into .venv-gpu, which only works where pip can reach torch
# wheels (an index, or PIP_FIND_LINKS pointing at wheels carried along).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${OUT:-$(mktemp -d -t gpu_check.XXXXXX)}
mkdir -p "$OUT"
export OUT
echo "gpu_check: logs and CSV go to $OUT"

if ! "$PY" -c "import torch" 2>/dev/null; then
    echo "gpu_check: 'import torch' fails with $PY; installing the project into .venv-gpu"
    if "$PY" -m venv --system-site-packages .venv-gpu && .venv-gpu/bin/pip install -q -e ".[test]"; then
        PY=.venv-gpu/bin/python
    else
        echo "gpu_check: cannot install torch here; set PYTHON to a Python that has torch" >&2
        exit 3
    fi
fi
# the project imports from the repo root whether or not it is installed
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
"$PY" -c "import torch; print('gpu_check: torch', torch.__version__, '| CUDA available:', torch.cuda.is_available())"

rc_tests=0
if "$PY" -c "import pytest" 2>/dev/null; then
    if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
        echo "gpu_check: no CUDA device: the CUDA tests will be collected and skipped"
    fi
    "$PY" -m pytest tests -m cuda -q -p no:cacheprovider 2>&1 | tee "$OUT/pytest_cuda.log"
    rc_tests=${PIPESTATUS[0]}
    [ "$rc_tests" -eq 5 ] && rc_tests=0  # 5: no test selected
else
    echo "gpu_check: pytest is not installed for $PY: skipping the CUDA tests" | tee "$OUT/pytest_cuda.log"
fi

"$PY" -m bench.gpu_check --out "$OUT/check" "$@" 2>&1 | tee "$OUT/gpu_check.log"
rc_check=${PIPESTATUS[0]}
echo "gpu_check: pytest exit $rc_tests, check exit $rc_check; results in $OUT"
[ "$rc_tests" -eq 0 ] && [ "$rc_check" -eq 0 ]
