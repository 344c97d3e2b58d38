#!/usr/bin/env bash
# The one command of a GPU session (docs/benchmarks.md, "GPU session"), run from the repo root:
#
#   bash bench/gpu_session.sh
#
# 1. Installs the wheels of .whl/ (`make gpu-wheels` here: pydantic and its needs, which the GPU
#    machine lacks) into /tmp/site and puts it on PYTHONPATH; reglab itself is not installed
#    (pip would replace the machine's torch with the pinned one): src/ goes on PYTHONPATH.
# 2. Writes $OUT/versions.txt: python, torch, CUDA, cuDNN, the GPU, nvidia-smi's line, and the
#    installed version of each of reglab's dependencies beside what pyproject.toml asks for.
# 3. Runs bench/bench_gpu.py with REGLAB_BENCH_RESULTS=$OUT/results.json, its log teed to
#    $OUT/bench_gpu.log, and exits with its status.
#
# Without $OUT (a dry run on a CPU machine) it writes to a new temporary folder and says where.
# A CPU dry run: PYTHON=.venv/bin/python REGLAB_BENCH_TINY=1 REGLAB_GPU_WHEELS=none bash bench/gpu_session.sh
# Variables: PYTHON (default python3), REGLAB_GPU_WHEELS (folder of wheels, default .whl; a
# folder that does not exist installs nothing), REGLAB_GPU_SITE (default /tmp/site).
set -u -o pipefail
cd "$(dirname "$0")/.." || exit 2
PY=${PYTHON:-python3}
WHEELS=${REGLAB_GPU_WHEELS:-.whl}
SITE=${REGLAB_GPU_SITE:-/tmp/site}
start=$(date +%s)

if [ -z "${OUT:-}" ]; then
    OUT=$(mktemp -d "${TMPDIR:-/tmp}/reglab-gpu-session.XXXXXX") || exit 2
    echo "gpu_session: OUT is not set (a dry run): writing to $OUT"
fi
mkdir -p "$OUT" || exit 2

if compgen -G "$WHEELS/*.whl" >/dev/null; then
    echo "gpu_session: installing $(ls "$WHEELS"/*.whl | wc -l) wheels of $WHEELS into $SITE"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHEELS"/*.whl \
        || { echo "gpu_session: installing the wheels failed"; exit 3; }
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
else
    echo "gpu_session: no wheels in $WHEELS: nothing installed"
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"

"$PY" - "$OUT/versions.txt" <<'EOF'
import importlib.metadata as md
import platform
import re
import sys
import tomllib

lines = [f"python: {platform.python_version()} ({sys.executable})", f"platform: {platform.platform()}"]
try:
    import torch

    lines.append(f"torch: {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}")
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        lines.append(
            f"gpu: {p.name}, capability {p.major}.{p.minor}, {p.total_memory / 2**30:.0f} GiB, "
            f"{p.multi_processor_count} SMs, {torch.cuda.device_count()} device(s)"
        )
    else:
        lines.append("gpu: none (torch.cuda.is_available() is False)")
except Exception as e:  # the versions file is written whatever is missing
    lines.append(f"torch: not importable ({type(e).__name__}: {e})")
try:
    import reglab

    lines.append(f"reglab: {reglab.__version__} from {reglab.__file__}")
except Exception as e:
    lines.append(f"reglab: not importable ({type(e).__name__}: {e})")
with open("pyproject.toml", "rb") as fh:
    wanted = tomllib.load(fh)["project"]["dependencies"]
extra = ["pydantic-core", "annotated-types", "typing-inspection", "typing-extensions"]
lines.append("reglab's dependencies (installed <- pyproject.toml asks):")
for spec in [*wanted, *extra]:
    name = re.split(r"[<>=!~ ;\[]", spec, maxsplit=1)[0]
    try:
        have = md.version(name)
    except md.PackageNotFoundError:
        have = "MISSING"
    lines.append(f"  {name}: {have}" + (f" <- {spec}" if spec != name else ""))
text = "\n".join(lines) + "\n"
open(sys.argv[1], "w").write(text)
print(text, end="")
EOF
if command -v nvidia-smi >/dev/null; then
    smi=$(nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used,temperature.gpu,power.draw,clocks.sm,clocks.max.sm \
        --format=csv,noheader 2>&1)
else
    smi="not found"
fi
echo "nvidia-smi: $smi" | tee -a "$OUT/versions.txt"

echo "gpu_session: bench/bench_gpu.py, results in $OUT/results.json, log in $OUT/bench_gpu.log"
REGLAB_BENCH_RESULTS="$OUT/results.json" PYTHONUNBUFFERED=1 "$PY" bench/bench_gpu.py 2>&1 | tee "$OUT/bench_gpu.log"
status=${PIPESTATUS[0]}
echo "gpu_session: bench_gpu.py exited with status $status after $(($(date +%s) - start)) s; files in $OUT"
exit "$status"
