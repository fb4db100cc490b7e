#!/usr/bin/env bash
# The GPU comparison in one command (issue "GPU"): writes OUT_DIR/<device>-<date>.json and .png.
#   benchmarks/gpu_check.sh OUT_DIR [gpu-check options]        e.g. --device cpu --tiny (the CI dry run)
# On the lent GPU machine, after benchmarks/prepare_device.sh here, run with carry [".whl"]:
#   benchmarks/gpu_check.sh "$OUT"
# It installs the carried wheels when diffusers or tqdm is missing, and uses the carried Push-T
# observation windows when they are there. The budget (--budget-s, default 420 s) keeps the run
# within 8 minutes; each part gets its share of what is left.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: benchmarks/gpu_check.sh OUT_DIR [gpu-check options]}
shift
python=${PYTHON:-python3}
if ! "$python" -c "import diffusers, tqdm" 2>/dev/null; then
    [ -d .whl ] || { echo "gpu_check: diffusers/tqdm missing and no .whl/ (run benchmarks/prepare_device.sh)" >&2; exit 2; }
    "$python" -m pip install -q --no-index --find-links .whl diffusers tqdm
fi
observations=()
[ -f .whl/pusht_windows.npz ] && observations=(--observations .whl/pusht_windows.npz)
PYTHONPATH=. PYTHONUNBUFFERED=1 "$python" -m paradigms_policy.commands.gpu_check --output "$out" "${observations[@]}" "$@"
