#!/usr/bin/env bash
# The GPU checks of the training, in one call of a few minutes, on a machine with one CUDA GPU and a multi-core CPU:
#  1. the paper's 3D networks (config/paper3d.yaml) at batch 32 in bf16: images/s, peak GPU memory, the FLOPs of one
#     step and their rate against the chip's bf16 matrix-multiply peak measured in the same run; once on one batch
#     held on the GPU (the model alone), once fed from a Zarr store like cells.zarr by 8 loader processes (the share of
#     step time spent waiting for data);
#  2. one real training epoch of each model of the paper preset through the workflow's own rules: a few hundred
#     synthetic cells at 0.29 µm voxels (config/gpu_check.yaml), with every rule's time from benchmarks/;
#  3. the loader's cells/s at the paper's crop size with 1, 8 and 14 worker processes, on that run's cells.zarr.
# Run from the repository root, with statcell's dependencies importable:
#     bash bench/gpu_check.sh [OUTDIR]        # tables and logs under OUTDIR (default gpu_check/)
set -euo pipefail
out=${1:-gpu_check}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
cores=$(nproc)

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/device.txt"
python3 -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda, torch.cuda.get_device_name())" \
    | tee -a "$out/device.txt"
echo "$cores CPU cores" | tee -a "$out/device.txt"

echo "== 1. paper3d networks, batch 32, bf16 autocast, channels-last"
python3 bench/bench_train.py --device cuda --precision bf16 --presets paper --paper-batch 32 --steps 20 \
    --layouts channels_last --data random store --workers 8 2>&1 | tee "$out/bench_train.txt"

echo "== 2. one epoch of the paper preset through the workflow's rules"
started=$(date +%s)
if ! python3 -m snakemake --cores "$cores" --resources gpu=1 --configfile config/paper3d.yaml config/gpu_check.yaml \
        results/models/reference.pt results/models/target.pt > "$out/snakemake.log" 2>&1; then
    tail -c 4000 "$out/snakemake.log"
    for log in logs/train_*.log; do [ -f "$log" ] && { echo "--- $log"; tail -c 3000 "$log"; }; done
    exit 1
fi
echo "workflow: $(( $(date +%s) - started )) s from nothing on $cores cores" | tee "$out/workflow.txt"
python3 bench/bench_run.py --existing . | tee -a "$out/workflow.txt"
grep -h "epoch 1 of\|best validation\|weights" logs/train_*.log | tee -a "$out/workflow.txt"
python3 -c "import pandas as pd; print(pd.read_parquet('results/main/cells.parquet')['split'].value_counts().to_dict())" \
    | tee -a "$out/workflow.txt"
cp logs/train_*.log "$out/"

echo "== 3. the loader at paper size, the run's cells"
python3 bench/bench_store.py --store results/main/cells.zarr --cells 192 --batch 8 --workers 1 8 14 --epochs 1 \
    2>&1 | tee "$out/bench_store.txt"
