#!/usr/bin/env bash
# The proof of compute's check on a CUDA machine: the CUDA tests of tests/test_proof_core.py,
# then benchmarks/gpu_proof.py (its arguments are this script's). Run it from anywhere as
#
#     bash benchmarks/gpu_check.sh [gpu_proof.py's options]
#
# with PYTHON (default python3) a Python that has torch with CUDA, numpy, psutil, pynvml,
# rich, pytest and hypothesis. Where idlegrid's other needs (pydantic and its parts) are
# missing and there is no network, put their wheels in .whl/: they are installed into
# /tmp/site, offline. The repository root goes on PYTHONPATH; idlegrid is not installed.
#
# Writes into OUT (default benchmarks/out/gpu): pytest.txt, gpu_proof.txt (the report) and
# gpu_proof.json. Exits non-zero when the tests or the benchmark fail. On an H200 it takes
# about two minutes; what to read in it, and what to do with the GPU floor after, is in
# docs/proof-of-compute.md ("What changed after that check").
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-benchmarks/out/gpu}"
PY="${PYTHON:-python3}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if compgen -G ".whl/*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    PYTHONPATH="/tmp/site:$PYTHONPATH"
fi
export PYTHONPATH

nvidia-smi -L
nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version,clocks.max.sm --format=csv

# tests/conftest.py imports the server (pydantic-settings, SQLAlchemy, solders); this file
# needs none of it. -rA prints the CUDA tests' throughput line.
"$PY" -m pytest -q -rA -p no:cacheprovider --noconftest tests/test_proof_core.py 2>&1 |
    tee "$OUT/pytest.txt"
tests=$?
if grep -q "SKIPPED.*needs a CUDA GPU" "$OUT/pytest.txt"; then
    echo "the CUDA tests were skipped: torch sees no GPU here"
    tests=1
fi

"$PY" benchmarks/gpu_proof.py --save "$OUT/gpu_proof.json" "$@" 2>&1 | tee "$OUT/gpu_proof.txt"
bench=$?
echo "tests exit $tests, benchmark exit $bench"
[ "$tests" -eq 0 ] && [ "$bench" -eq 0 ]
