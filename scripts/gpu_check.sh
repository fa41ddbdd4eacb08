#!/usr/bin/env bash
# The GPU route end to end, with the tritonserver of the nvidia-pytriton wheel (no NGC image):
# export, parity with onnxruntime on the CPU, Triton with --model-config-name=gpu, the gateway
# with --backend gpu, and load at concurrency 1/8/32 -> benchmarks/results/gpu.json.
# Details in benchmarks/GPU.md.
#
#   scripts/gpu_check.sh --prepare       here (the project's .venv, PyPI reachable): fill
#                                        .gpu_carry/ with what the GPU machine lacks (~60 MB)
#   scripts/gpu_check.sh [ARGS]          on the GPU machine, from the repository root with
#                                        .gpu_carry/ in it; no internet. ARGS go to
#                                        `python -m benchmarks.gpu` (e.g. --catalogues hetrec)
#   scripts/gpu_check.sh --cpu-dry-run   here: the same Python path on a CPU (NumPy runner)
#
# The GPU machine is expected to have: an NVIDIA driver, python3 (3.12) with PyTorch (CUDA)
# and/or CuPy, onnx, onnxruntime (CPU is enough), scipy, pandas, tqdm, rich, prometheus-client;
# NumPy 2 is fine for everything but the Python-backend stubs, which get NumPy 1.26 in a venv of
# their own (numpy 2 corrupts their tensors; ../shared/notes/stack.md). Environment:
#   PYTHON (python3), MUSICREC_GPU_WORK (/tmp/musicrec-gpu), MUSICREC_GPU_CARRY (.gpu_carry),
#   MUSICREC_GPU_BUDGET_S (420: no load run starts after that), OUT (also copy results there),
#   HETREC (../shared/data/hetrec2011-lastfm-2k, for --prepare).
set -euo pipefail
cd "$(dirname "$0")/.."
CARRY=${MUSICREC_GPU_CARRY:-.gpu_carry}
PINS=(numpy protobuf grpcio grpcio-health-checking grpcio-reflection "tritonclient\[grpc\]"
      python-rapidjson)

die() { echo "gpu_check: $*" >&2; exit 1; }

prepare() {
    local py=.venv/bin/python hetrec=${HETREC:-../shared/data/hetrec2011-lastfm-2k} stage site
    [ -x "$py" ] || die "no .venv: run scripts/setup.sh first"
    [ -f "$hetrec/user_artists.dat" ] || die "HetRec not found at $hetrec (set HETREC)"
    rm -rf "$CARRY" && mkdir -p "$CARRY/wheels"
    mkdir -p .git/info && touch .git/info/exclude
    grep -qxF "/${CARRY#./}/" .git/info/exclude || echo "/${CARRY#./}/" >> .git/info/exclude

    # Wheels for CPython 3.12 at the versions this project pins (requirements-gateway.lock).
    local specs=() name
    for name in "${PINS[@]}"; do
        specs+=("$(grep -E "^${name}==" requirements-gateway.lock | sed 's/\[grpc\]//')")
    done
    echo "wheels: ${specs[*]}"
    "$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        --platform manylinux1_x86_64 -d "$CARRY/wheels" "${specs[@]}"

    # The wheel's tritonserver tree (binary, Python backend, the 3.12 stub) and its libraries,
    # laid out as in site-packages (the binary finds them through its RPATH), under a stand-in
    # `pytriton` package (serving.triton_server finds the tree through pytriton.__file__).
    site=$("$py" -c 'import pathlib, pytriton; print(pathlib.Path(pytriton.__file__).parent.parent)')
    stage=$(mktemp -d)
    trap 'rm -rf "$stage"' RETURN
    mkdir -p "$stage/pytriton" && : > "$stage/pytriton/__init__.py"
    cp -a "$site/pytriton/tritonserver" "$stage/pytriton/"
    find "$stage/pytriton/tritonserver/python_backend_stubs" -mindepth 1 -maxdepth 1 \
        ! -name 3.12 -exec rm -rf {} +
    rm -f "$stage/pytriton/tritonserver/backends/python/triton_python_backend_stub"  # this Python's
    find "$stage" -name __pycache__ -prune -exec rm -rf {} +
    cp -a "$site/nvidia_pytriton.libs" "$stage/"
    rm -f "$stage"/nvidia_pytriton.libs/libpython3*  # the stub uses the machine's libpython
    tar -C "$stage" -cf - pytriton nvidia_pytriton.libs | xz -T0 -6 > "$CARRY/tritonserver.tar.xz"

    # HetRec as a play matrix and vocabulary (no pandas parsing on the GPU machine).
    "$py" -m benchmarks.gpu --hetrec "$hetrec" --save-hetrec "$stage/hetrec"
    tar -C "$stage" -cJf "$CARRY/hetrec.tar.xz" hetrec

    local carry_mb tree_mb
    carry_mb=$(du -sm "$CARRY" | cut -f1)
    tree_mb=$(git ls-files -co --exclude-standard -z | du -cm --files0-from=- | tail -1 | cut -f1)
    echo "$CARRY: ${carry_mb} MB; the working tree without it: ${tree_mb} MB (a device call"
    echo "carries at most 64 MiB in all). On the GPU machine: bash scripts/gpu_check.sh"
    ls -la "$CARRY" "$CARRY/wheels"
}

run_on_gpu() {
    local py=${PYTHON:-python3} work=${MUSICREC_GPU_WORK:-/tmp/musicrec-gpu}
    local version libdir stub_site status=0 wheels=()
    [ -f "$CARRY/tritonserver.tar.xz" ] || die "no $CARRY/: run 'scripts/gpu_check.sh --prepare'
on a machine with the project's .venv, and bring the folder along"
    if command -v nvidia-smi > /dev/null; then
        nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    else
        echo "gpu_check: warning: no nvidia-smi on PATH" >&2
    fi
    version=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    [ "$version" = 3.12 ] || die "python $version: the carried wheels and stub are for 3.12"

    rm -rf "$work" && mkdir -p "$work/site" "$work/data" "$work/logs"
    # 1. What the benchmark and the gateway need beyond the machine's packages (gRPC >= 1.81,
    #    protobuf 6.33, tritonclient...), first on their path. Not NumPy: they keep NumPy 2.
    for whl in "$CARRY"/wheels/*.whl; do
        case "$(basename "$whl")" in numpy-*) ;; *) wheels+=("$whl") ;; esac
    done
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
        --target "$work/site" "${wheels[@]}"
    # 2. The Triton tree, as the wheel lays it out.
    tar -xJf "$CARRY/tritonserver.tar.xz" -C "$work/site"
    # 3. The Python-backend stubs' environment: NumPy 1.26 first, the machine's packages (torch,
    #    CuPy, onnx, onnxruntime) through a .pth file. Triton finds it with its bin first in PATH.
    "$py" -m venv --without-pip "$work/stubenv"
    stub_site=$("$work/stubenv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
        --target "$stub_site" "$CARRY"/wheels/numpy-*.whl
    "$py" -c 'import site; print("\n".join(site.getsitepackages()))' \
        > "$stub_site/musicrec_machine_packages.pth"
    "$work/stubenv/bin/python" - <<'EOF'
import importlib.util
import numpy
assert numpy.__version__.startswith("1."), f"stub env has numpy {numpy.__version__}"
found = {m: importlib.util.find_spec(m) is not None for m in ("torch", "cupy", "onnx", "onnxruntime")}
print(f"stub env: numpy {numpy.__version__}, {found}")
assert found["onnx"] and found["onnxruntime"] and (found["torch"] or found["cupy"]), found
EOF
    libdir=$(ldconfig -p 2> /dev/null | awk '/libpython3\.12\.so\.1\.0/ {print $NF; exit}')
    libdir=${libdir:+$(dirname "$libdir")}
    libdir=${libdir:-$("$py" -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR"))')}
    [ -e "$libdir/libpython3.12.so.1.0" ] || echo "gpu_check: warning: no libpython3.12.so.1.0 in $libdir" >&2
    tar -xJf "$CARRY/hetrec.tar.xz" -C "$work/data"

    export PYTHONPATH="$work/site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
    "$py" -m benchmarks.gpu --triton-venv "$work/stubenv" --libpython-dir "$libdir" \
        --hetrec "$work/data/hetrec" --budget-s "${MUSICREC_GPU_BUDGET_S:-420}" \
        --keep-logs "$work/logs" "$@" || status=$?
    if [ -n "${OUT:-}" ]; then
        cp benchmarks/results/gpu.json "$OUT/" 2> /dev/null || true
        tar -C "$work" -czf "$OUT/gpu_logs.tar.gz" logs 2> /dev/null || true
    fi
    echo "gpu_check: exit $status (results: benchmarks/results/gpu.json, logs: $work/logs)"
    return "$status"
}

case "${1:-}" in
    --prepare) prepare ;;
    --cpu-dry-run) shift; exec .venv/bin/python -m benchmarks.gpu --cpu-dry-run "$@" ;;
    -h|--help) sed -n '2,21p' "$0" ;;
    *) run_on_gpu "$@" ;;
esac
