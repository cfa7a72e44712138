#!/usr/bin/env bash
# Run the GPU tests and GPU benchmarks of rasplang on a machine with CUDA.
#
#   tests/gpu/run.sh OUTDIR
#
# Installs what is missing (best effort: cupy-cuda12x, pytest-benchmark, hypothesis,
# attrs, the package itself with `pip install -e .`), then writes into OUTDIR:
#   env.txt           python, numpy, numba, cupy versions, nvidia-smi, nproc
#   junit-gpu.xml     the GPU tests (tests/gpu and every test marked gpu)
#   pytest-gpu.txt    their console output
#   bench-gpu.json    pytest-benchmark results (cupy, numba and numpy backends)
#   forward.txt       compiled-model forward throughput, xp=cupy beside numpy
#   summary.txt       what ran, what failed, and a throughput table (sequences/s)
# Every step runs even if an earlier one failed; the exit status is that of the tests.
set -u
OUT=${1:?usage: tests/gpu/run.sh OUTDIR}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"
log() { echo "[run.sh] $*" | tee -a "$SUMMARY"; }

have() { "$PY" -c "import $1" >/dev/null 2>&1; }
install() {  # install MODULE PIP_NAME
    if have "$1"; then log "have $1"; return 0; fi
    if "$PY" -m pip install -q "$2" >>"$OUT/pip.txt" 2>&1; then log "installed $2"
    else log "WARNING: could not install $2 (see pip.txt)"; fi
}

install attrs attrs
install hypothesis hypothesis
install pytest pytest
install pytest_benchmark pytest-benchmark
install numba numba
install cupy cupy-cuda12x

# The package: editable install, else a copy of the source tree on PYTHONPATH that maps
# interpreter/ and backend/ to rasplang.interpreter and rasplang.backend.
if "$PY" -c "import rasplang.interpreter" >/dev/null 2>&1; then
    log "rasplang importable"
elif "$PY" -m pip install -q --no-deps --no-build-isolation -e . >>"$OUT/pip.txt" 2>&1 \
        && "$PY" -c "import rasplang.interpreter" >/dev/null 2>&1; then
    log "installed rasplang (editable)"
else
    SRC=$(mktemp -d)
    cp -r rasplang "$SRC/rasplang"
    cp -r interpreter "$SRC/rasplang/interpreter"
    [ -d backend ] && cp -r backend "$SRC/rasplang/backend"
    export PYTHONPATH="$SRC:$(pwd)${PYTHONPATH:+:$PYTHONPATH}"
    log "WARNING: pip install -e . failed; using a source copy at $SRC"
fi
export PYTHONPATH="$(pwd)${PYTHONPATH:+:$PYTHONPATH}"  # for `tests.strategies`

{
    "$PY" - <<'PYEOF'
import platform, sys
print("python", sys.version.replace("\n", " "))
print("machine", platform.machine(), platform.processor())
for name in ("numpy", "numba", "cupy", "hypothesis", "pytest_benchmark"):
    try:
        module = __import__(name)
        print(name, getattr(module, "__version__", "?"))
    except Exception as exc:
        print(name, "MISSING:", exc)
try:
    import cupy
    print("gpus", cupy.cuda.runtime.getDeviceCount(),
          cupy.cuda.runtime.getDeviceProperties(0)["name"].decode())
except Exception as exc:
    print("cupy device: unavailable:", exc)
PYEOF
    echo "nproc $(nproc)"
    nvidia-smi 2>&1 || true
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt" >> "$SUMMARY"

log "GPU tests"
"$PY" -m pytest -q -p no:cacheprovider -m gpu \
    tests/gpu tests/differential/test_interpreter.py tests/property/test_interpreter_random.py \
    --junitxml="$OUT/junit-gpu.xml" >"$OUT/pytest-gpu.txt" 2>&1
TEST_STATUS=$?
tail -n 15 "$OUT/pytest-gpu.txt" >> "$SUMMARY"
log "GPU tests exit status $TEST_STATUS"

log "compiled-model forward throughput (xp=cupy beside numpy)"
timeout ${FORWARD_TIMEOUT:-300} "$PY" tests/gpu/forward_bench.py > "$OUT/forward.txt" 2>&1
log "forward benchmark exit status $?"
cat "$OUT/forward.txt" >> "$SUMMARY"
log "benchmarks (cupy, numba, numpy; batch 10,000; T = 16, 64)"
"$PY" -m pytest -q -p no:cacheprovider benchmarks/bench_interpreter.py --benchmark-only \
    -k "(test_interpreter and (cupy or numba)) or first_call" --benchmark-json="$OUT/bench-gpu.json" \
    >"$OUT/bench-gpu.txt" 2>&1
log "benchmarks exit status $?"
if [ -s "$OUT/bench-gpu.json" ]; then
    "$PY" benchmarks/bench_interpreter.py summarize "$OUT/bench-gpu.json" >> "$SUMMARY" 2>&1
fi
exit $TEST_STATUS
