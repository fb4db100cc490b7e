#!/usr/bin/env bash
# Prepare .whl/ (git-ignored) for a `device` run of benchmarks/gpu_check.sh, on this machine:
# - the wheels the GPU machine lacks (it has Python 3.12 with torch, safetensors, numpy and matplotlib
#   only, and no network): diffusers and tqdm with their dependencies;
# - 256 consecutive observation windows of Push-T demonstrations (../shared does not travel), so that
#   the shipped policy's rounds on the GPU are those of real observations.
#   benchmarks/prepare_device.sh [PYTHON] [ZARR]
set -euo pipefail
cd "$(dirname "$0")/.."
python=${1:-.venv/bin/python}
zarr=${2:-../shared/data/pusht/pusht_cchi_v7_replay.zarr}
rm -rf .whl && mkdir -p .whl
"$python" -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "diffusers>=0.30" "tqdm>=4.60"
rm -f .whl/numpy-*.whl .whl/safetensors-*.whl
"$python" -c "from paradigms_policy.commands.gpu_check import export_observations; export_observations('$zarr', '.whl/pusht_windows.npz')"
du -sh .whl
