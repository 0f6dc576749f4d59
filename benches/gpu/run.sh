#!/usr/bin/env bash
# One device session on an NVIDIA GPU: the GPU tests, then the base-config benchmarks. Runs
# binaries built elsewhere (the GPU machine reaches no registry) from a carried folder:
#   cargo build --release --features cuda
#   cargo test -p ecamp-model --features cuda --release --test gpu --no-run
#   bash benches/gpu/prepare.sh            # strips and gzips both into .gpu/ with the tokenizer
# Writes everything under $OUT (default /tmp/ecamp-gpu). Each stage has its own time limit and
# the next one runs whatever happened, so a slow or failing stage still leaves the others'
# numbers.
set -u
CARRIED=${CARRIED:-.gpu}
OUT=${OUT:-/tmp/ecamp-gpu}
WORK=${WORK:-/tmp/ecamp-gpu-work}
BIN=$WORK/bin
mkdir -p "$OUT" "$WORK" "$BIN"
for f in ecamp gpu-tests; do gzip -dc "$CARRIED/$f.gz" >"$BIN/$f" && chmod +x "$BIN/$f"; done
cp "$CARRIED/mimic_wordpiece.json" "$BIN/"
stage() { # name limit command...
  local name=$1 limit=$2
  shift 2
  local t0=$SECONDS
  timeout "$limit" "$@" >"$OUT/$name.txt" 2>&1
  local rc=$?
  echo "$name: rc=$rc in $((SECONDS - t0)) s" | tee -a "$OUT/stages.txt"
}
nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1
nproc >>"$OUT/nvidia-smi.txt"

# burn 0.21's CUDA backend compiles every kernel (and autotunes every matmul shape) on first use:
# on an H200 the first base-config step did not finish within 140 s, nor the tiny-model tests
# within 100 s (BENCHMARKS.md, "GPU"). So the stages get long limits, the pre-training benchmark
# comes first, and the whole script needs a ~9.5-minute device call (the per-call maximum is 10).

# 1. Base-config pre-training on phantoms through the real loader (mixed precision bf16, the
#    official 256 per device): step time, samples/s and data wait per step in metrics.jsonl.
stage ingest 40 "$BIN/ecamp" ingest --dataset "$WORK/ds" --source phantom:4096 --image-size 512 -q
stage vocab 30 "$BIN/ecamp" vocab build --dataset "$WORK/ds" --tokenizer "$BIN/mimic_wordpiece.json"
stage pin 20 "$BIN/ecamp" snapshot pin --dataset "$WORK/ds"
stage pretrain_bf16 300 "$BIN/ecamp" pretrain --dataset "$WORK/ds" --preset base --backend cuda \
  --precision bf16 --batch-size 256 --max-steps 30 --out "$WORK/run" --quiet --json
cp "$WORK/run/metrics.jsonl" "$OUT/pretrain_bf16_metrics.jsonl" 2>/dev/null

# 2. Correctness on the GPU: augmentation vs the f64 reference, forward vs ndarray, bf16/f16
#    autocast vs f32, training steps in f32 and bf16.
stage tests 150 "$BIN/gpu-tests" --nocapture --test-threads 1

# 3. The model step alone on synthetic batches, f32 against bf16 autocast, if time is left.
stage step_bf16 30 "$BIN/ecamp" bench model --backend cuda --preset base --batch-size 256 \
  --precision bf16 --steps 5 --warmup 2 --json
stage step_f32 30 "$BIN/ecamp" bench model --backend cuda --preset base --batch-size 256 \
  --precision f32 --steps 5 --warmup 2 --json
nvidia-smi --query-gpu=name,clocks.max.sm,memory.used --format=csv >>"$OUT/nvidia-smi.txt" 2>&1
echo done | tee -a "$OUT/stages.txt"
