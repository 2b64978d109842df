#!/usr/bin/env bash
# Engine benchmarks and one end-to-end job on a CUDA GPU, in one command (issue 15).
#
#     bash bench/gpu.sh            # needs torch with CUDA and a visible GPU; ~15 min
#
# Prints the tables of bench_floor.py (FGMT vs its floor and vs main's matching, and an
# ensemble's matching overlapped with the next target's gradients or not),
# bench_engine.py (quality, cost, memory incl. ResNet-18), then the wall time and summary
# of `trajx run` on an FGMT ensemble job (3 targets, T = 30) with params.device "cuda", and
# GPT-2-small FGMT at T = 30 with its pairs and cost products on the GPU (bench_hf_cost.py).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
export PYTHONPATH=${PYTHONPATH:-$PWD}
# One intra-op thread for the CPU side (assignment solves), as in the CPU tables.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

"$python" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else "no CUDA device visible: bench/gpu.sh needs a GPU")'
"$python" -c 'import torch; print("#", torch.cuda.get_device_name(0), "| torch", torch.__version__, "| CUDA", torch.version.cuda)'

"$python" -m bench.bench_floor --device cuda
"$python" bench/bench_engine.py --device cuda --resnet18

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$python" bench/gpu_job.py "$work" --device cuda
echo "## End to end: trajx run, FGMT, MLP 64-512-512-10, 3 targets, T = 30, device cuda"
time "$python" -c 'from trajx.cli import main; main()' run "$work/spec.json" --out "$work/out" --json

echo "## GPT-2-small, FGMT, T = 30, device cuda (pairs in bfloat16 on the GPU, solves on host threads)"
"$python" bench/bench_hf_cost.py --skip-derivation --device cuda --steps 30 --threads "$(nproc)"
