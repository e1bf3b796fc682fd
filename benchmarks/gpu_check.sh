#!/usr/bin/env bash
# trainkit's GPU check: one script, under 8 minutes on one CUDA GPU (written for an H200), that writes its figures
# as JSON. It needs a clone and the README's install (python3 -m venv .venv && .venv/bin/pip install -e ".[dev]"),
# nothing from the internet.
#
#   benchmarks/gpu_check.sh [OUT.json]        # default: $GPU_CHECK_OUT, else benchmarks/results/gpu_check.json
#
# Checks, each in a process of its own through the real `trainkit train` path (trainkit.train in Python, with a
# callback that reads what the run really did); each records pass/fail, its figures and its error, and the script
# goes on; it exits 1 if any failed:
#   fp32, bf16_mixed, 16_mixed   trainer.precision on cuda (CNN, 2 epochs): it learns, the GradScaler is on for
#                                16-mixed only; samples/s
#   on_device_true/_false        data.on_device: the split in GPU memory, or pinned host memory (MLP)
#   channels_last                trainer.channels_last=true: conv weights in channels_last, it learns (CNN)
#   ddp_one_process              trainer.devices=1 under torchrun --nproc_per_node=1: records whether trainkit
#                                alone wraps the model in DDP (it joins a process group only for WORLD_SIZE > 1),
#                                then joins a one-process group itself (nccl+gloo) so the run goes through
#                                DistributedDataParallel, and checks that it did and learned
#   deterministic_resume         trainer.deterministic=true on cuda: 4 epochs straight against 2, then
#                                resume=<that run> to 4; the last checkpoints' weights must be bitwise equal
#   throughput                   benchmarks/run.py --only throughput --device cuda: trainkit against the best
#                                hand-written loop (fused Adam, indexed tensors on the GPU), MNIST MLP and CNN at
#                                batch 128 and 1024, 15 interleaved epochs each; the ratios, median and paired
#   compile                      trainer.compile=true (CNN): compiled, learns; first epoch time (compilation)
#   cifar10_fast                 experiment=cifar10_fast at airbench's size (model.width=64 model.stages=[1,4,4],
#                                trainer.precision=bf16-mixed): seconds of training to 94% test accuracy; needs
#                                CIFAR_ROOT (skipped, not failed, without it)
#
# Environment:
#   MNIST_CSV=DIR          a folder with the real train.csv and test.csv (`trainkit data prepare mnist-csv`);
#                          without it the script writes 60,000 + 10,000 rows of random uint8 pixels in the Kaggle
#                          layout (label,pixel0..pixel783) to a temp dir: throughput does not depend on the
#                          pixels, and the label (the brightest of pixel rows 9..18) can be learned
#   CIFAR_ROOT=DIR         the folder that holds the real cifar-10-batches-py/ (for the cifar10_fast check)
#   GPU_CHECK_DEVICE=cpu   dry run of the script's logic on the CPU (default cuda); with
#   GPU_CHECK_QUICK=1      tiny runs (12,000 + 1,000 generated rows, 4 epochs of 84 batches, run.py --quick)
#                          e.g. GPU_CHECK_DEVICE=cpu GPU_CHECK_QUICK=1 benchmarks/gpu_check.sh /tmp/gpu_check_cpu.json
#   GPU_CHECK_ONLY=a,b     only these checks
#   GPU_CHECK_BUDGET_S=470 the whole script's time: a check that would start past it fails as "not run"
#   GPU_CHECK_KEEP=1       keep the temp dir (generated data, run directories)
#   PYTHON=...             the interpreter (default .venv/bin/python)
# Each check's output goes to OUT's folder, <OUT stem>_logs/NAME.log (and the throughput JSON, gpu_throughput.json).
set -u
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
OUT=${1:-${GPU_CHECK_OUT:-benchmarks/results/gpu_check.json}}
exec "$PYTHON" benchmarks/gpu_check.py "$OUT"
