#!/usr/bin/env bash
# The GPU checks of the training, in one call of a few minutes, on a machine with one CUDA GPU and a multi-core CPU:
#  1. the paper's 3D networks (config/paper3d.yaml) at batch 32 in bf16: images/s, peak GPU memory, the FLOPs of one
#     step and their rate against the chip's bf16 matrix-multiply peak measured in the same run; once on one batch
#     held on the GPU (the model alone; with cuDNN's autotuning off and on, then with torch.compile, and the
#     operators that take the most GPU time), once fed from a Zarr store like cells.zarr by 8 loader processes
#     (the share of step time spent waiting);
#  2. one real training epoch of each model of the paper preset through the workflow's own rules: a few hundred
#     synthetic cells at 0.29 µm voxels (config/gpu_check.yaml), with every rule's time from benchmarks/;
#  3. the loader's cells/s at the paper's crop size with 1, 8 and 14 worker processes, on that run's cells.zarr.
# Run from the repository root, with statcell's dependencies importable by `python` (the rules call `python -m
# statcell`):
#     bash bench/gpu_check.sh [OUTDIR]        # tables and logs under OUTDIR (default gpu_check/), written as it goes
# The workflow part stops after GPU_CHECK_WORKFLOW_S seconds (default 300) and then reports what it reached: the
# rules' times so far, the end of every training log. GPU_CHECK_PARTS picks and orders the parts (default
# "networks workflow loader"; the loader part needs the workflow's cells.zarr).
set -euo pipefail
out=${1:-gpu_check}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
cores=$(nproc)
parts=${GPU_CHECK_PARTS:-networks workflow loader}
for part in $parts; do
    case $part in
        networks | workflow | loader) ;;
        *) echo "gpu_check: unknown part '$part' in GPU_CHECK_PARTS (networks, workflow, loader)"; exit 2 ;;
    esac
done
python -c "import torch; assert torch.cuda.is_available()" 2>/dev/null || {
    echo "gpu_check: no CUDA GPU is visible to torch here; run it on a machine with one"
    exit 2
}
python -c "import statcell.cli, yaml, zarr, snakemake" || {
    echo "gpu_check: 'python' must be the interpreter with statcell's dependencies ($(command -v python))"
    exit 2
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/device.txt"
python -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda, torch.cuda.get_device_name())" \
    | tee -a "$out/device.txt"
echo "$cores CPU cores" | tee -a "$out/device.txt"

networks() {
    echo "== 1. paper3d networks, batch 32, bf16 autocast, channels-last; cuDNN autotuning off and on; the top operators"
    python bench/bench_train.py --device cuda --precision bf16 --presets paper --paper-batch 32 --steps 20 \
        --layouts channels_last --data random --cudnn-benchmark off on --profile 12 2>&1 | tee "$out/bench_train.txt"
    python bench/bench_train.py --device cuda --precision bf16 --presets paper --paper-batch 32 --steps 20 \
        --layouts channels_last --data random --cudnn-benchmark on --compile on 2>&1 | tail -n 2 \
        | tee -a "$out/bench_train.txt"
    python bench/bench_train.py --device cuda --precision bf16 --presets paper --paper-batch 32 --steps 20 \
        --layouts channels_last --data store --workers 8 2>&1 | tail -n 2 | tee -a "$out/bench_train.txt"
}

workflow() {
    echo "== 2. one epoch of the paper preset through the workflow's rules"
    started=$(date +%s)
    status=0
    timeout "${GPU_CHECK_WORKFLOW_S:-300}" python -m snakemake results/models/reference.pt results/models/target.pt \
        --cores "$cores" --resources gpu=1 --configfile config/paper3d.yaml config/gpu_check.yaml \
        > "$out/snakemake.log" 2>&1 || status=$?
    {
        echo "workflow: exit status $status after $(( $(date +%s) - started )) s on $cores cores (124: time limit)"
        python bench/bench_run.py --existing . || true
        for log in logs/train_*.log; do [ -f "$log" ] && { echo "--- $log (end)"; tail -c 2000 "$log"; }; done
        [ "$status" = 0 ] || tail -c 3000 "$out/snakemake.log"
    } 2>&1 | tee "$out/workflow.txt"
    return "$status"
}

loader() {
    echo "== 3. the loader at paper size, the run's cells"
    python bench/bench_store.py --store results/main/cells.zarr --cells 192 --batch 8 --workers 1 8 14 --epochs 1 \
        2>&1 | tee "$out/bench_store.txt"
}

for part in $parts; do
    "$part"
done
