#!/usr/bin/env bash
# One prepared GPU session: install offline, run the GPU tests, the GPU benchmark and the profile.
#
#   bash bench/gpu_wheels.sh                 # here, once: fills wheels/ (carried to the node)
#   bash bench/gpu_session.sh                # on the GPU node, from the repository root
#
# Made for a scarce node (an H200 with 16 cores, about 8 minutes; Python 3.12, CuPy, NumPy,
# SciPy, pyarrow, scikit-learn, numba, pytest on its image, nothing to download): every step
# is time-boxed (timeout) against one deadline, SESSION_S seconds (default 460) from the start,
# each keeping back the time the later steps need, so the whole ends in time; a step that
# fails or runs out of time is recorded and the next one runs. Everything goes under $OUT
# (default /tmp/acetate-gpu-session), at most 8 files:
#
#   session.log     all steps' output, in order        steps.txt       each step: status, seconds
#   env.txt         nvidia-smi, Python, CuPy, CPUs      pytest_gpu.log  pytest -m gpu
#   bench_gpu.txt   python bench/run.py --gpu           bench_gpu.json  its figures
#   profile_gpu.txt python bench/profile_gpu.py
#
# The project is installed with pip --target into a temporary folder, and the tests run from
# a copy of tests/ in another one, so the source folder acetate/ (only acetate/__init__.py: the
# sub-packages live in kernels/, pipeline/ ...) never shadows the installed package.
# Without a GPU (or without the wheels) the steps say so and the script still ends, exit 0.
#
# Variables: OUT, WHEELS (default wheels), SESSION_S (default 460), PYTHON (default python3),
# BENCH_ARGS (default "--repeat 3 --tracks 48 --seconds 60"), PROFILE_ARGS (default "--seconds 300").
set -u
cd "$(dirname "$0")/.."
REPO=$PWD
OUT=${OUT:-/tmp/acetate-gpu-session}
WHEELS=${WHEELS:-wheels}
PY=${PYTHON:-python3}
SESSION_S=${SESSION_S:-460}
BENCH_ARGS=${BENCH_ARGS:---repeat 3 --tracks 48 --seconds 60}
PROFILE_ARGS=${PROFILE_ARGS:---seconds 300}
START=$(date +%s)
DEADLINE=$((START + SESSION_S))
WORK=$(mktemp -d /tmp/acetate-gpu.XXXXXX)
SITE=$WORK/site   # the carried wheels
PROJ=$WORK/proj   # the project
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
mkdir -p "$OUT" "$SITE" "$PROJ"
: >"$OUT/steps.txt"
exec > >(tee -a "$OUT/session.log") 2>&1
TEE_PID=$!

# step NAME CAP RESERVE LOG COMMAND...: run COMMAND for at most CAP seconds, and never past the
# deadline less RESERVE seconds (what the later steps need); its output to the session log and LOG.
step() {
  local name=$1 cap=$2 reserve=$3 log=$4
  shift 4
  local now left t0 rc
  now=$(date +%s)
  left=$((DEADLINE - now - reserve))
  [ "$left" -lt "$cap" ] && cap=$left
  if [ "$cap" -lt 10 ]; then
    echo "== $name: skipped, $((DEADLINE - now)) s left of the session" | tee -a "$OUT/steps.txt"
    return 0
  fi
  echo "== $name (at most ${cap} s; $((now - START)) s into the session)"
  t0=$(date +%s)
  # through bash -c: COMMAND may be one of the functions below (exported), which timeout cannot run itself
  if [ "$log" = - ]; then
    timeout -k 10 "$cap" bash -c '"$@"' "$name" "$@"
    rc=$?
  else
    timeout -k 10 "$cap" bash -c '"$@"' "$name" "$@" 2>&1 | tee "$OUT/$log"
    rc=${PIPESTATUS[0]}
  fi
  local status=ok
  [ "$rc" -ne 0 ] && status="exit $rc"
  [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ] && status="timed out after ${cap} s"
  echo "== $name: $status in $(($(date +%s) - t0)) s" | tee -a "$OUT/steps.txt"
  return 0
}

env_info() {
  echo "date: $(date -u '+%Y-%m-%d %H:%M:%S') UTC; repo: $REPO; work: $WORK"
  nvidia-smi 2>&1 || echo "nvidia-smi: not available"
  nvidia-smi -L 2>&1 || true
  echo "CPUs: $(nproc); memory: $(free -g 2>/dev/null | awk '/^Mem:/ {print $2 " GiB"}')"
  "$PY" - <<'EOF'
import sys
print("python", sys.version.split()[0], sys.executable)
try:
    import cupy

    print("cupy", cupy.__version__, "devices", cupy.cuda.runtime.getDeviceCount())
except Exception as exc:
    print("cupy: not usable:", type(exc).__name__, exc)
for name in ("numpy", "scipy", "pyarrow", "sklearn", "numba", "pytest"):
    try:
        print(name, __import__(name).__version__)
    except Exception as exc:
        print(name, "absent:", exc)
EOF
}

install_wheels() {
  local whl=("$REPO/$WHEELS"/*.whl)
  if [ ! -e "${whl[0]}" ]; then
    echo "no wheels in $REPO/$WHEELS (run bash bench/gpu_wheels.sh first and carry the folder): using what is installed"
    return 1
  fi
  "$PY" -m pip install -q --no-index --find-links "$REPO/$WHEELS" --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "${whl[@]}"
}

install_project() {
  # --no-build-isolation: setuptools and wheel from the image, nothing fetched
  "$PY" -m pip install -q --no-deps --no-build-isolation --no-compile --no-cache-dir --target "$PROJ" "$REPO"
}

check_import() {
  # from $WORK: a script on stdin has the current folder first on sys.path, and the repository's
  # acetate/ would shadow the installed package
  cd "$WORK" && "$PY" - <<'EOF'
import acetate, acetate.kernels, acetate.pipeline.catalogue.cluster as cluster
print("acetate from", acetate.__file__)
assert "/proj/" in acetate.__file__, "the installed package must be the one imported"
import dask, distributed, soundfile, av, pyloudnorm, array_api_compat
print("dask", dask.__version__, "distributed", distributed.__version__, "soundfile", soundfile.__version__, "av", av.__version__)
print("GPUs (nvidia-smi / CuPy, no CUDA in this process):", cluster.detect_gpus())
EOF
}

gpu_tests() {
  local t=$WORK/tests-run
  mkdir -p "$t"
  cp -r "$REPO/tests" "$t/tests"
  cat >"$t/pytest.ini" <<'EOF'
[pytest]
markers =
    gpu: needs CuPy and a CUDA device (skipped elsewhere)
    slow: long-running (still part of CI)
    fuzz: property-based tests of hostile input
filterwarnings =
    error::RuntimeWarning:acetate.*
EOF
  local extra=()
  "$PY" -c "import pytest_timeout" 2>/dev/null && extra=(--timeout 90)
  (cd "$t" && "$PY" -m pytest -q -m gpu -p no:cacheprovider -rfE --continue-on-collection-errors "${extra[@]}" tests)
}

export -f env_info install_wheels install_project check_import gpu_tests
export REPO OUT WHEELS PY WORK SITE PROJ
export PYTHONPATH="$PROJ:$SITE${PYTHONPATH:+:$PYTHONPATH}"
echo "acetate GPU session: $(date -u '+%H:%M:%S') UTC, deadline in ${SESSION_S} s; output in $OUT"
#    name              cap  keep  log              command
step "environment"      20  440  env.txt          env_info
step "install wheels"   60  400  -                install_wheels
step "install project"  60  360  -                install_project
step "import check"     30  340  -                check_import
step "pytest -m gpu"   120  220  pytest_gpu.log   gpu_tests
step "bench/run.py --gpu" 260 60 bench_gpu.txt    "$PY" "$REPO/bench/run.py" --gpu $BENCH_ARGS --json "$OUT/bench_gpu.json"
step "bench/profile_gpu.py" 90 0 profile_gpu.txt  "$PY" "$REPO/bench/profile_gpu.py" $PROFILE_ARGS
echo "acetate GPU session: done in $(($(date +%s) - START)) s"
cat "$OUT/steps.txt"
rm -rf "$WORK"
exec >&- 2>&-
wait "$TEE_PID" 2>/dev/null || sleep 1 # the session log complete before $OUT is collected
exit 0
