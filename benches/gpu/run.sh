#!/usr/bin/env bash
# One device session on an NVIDIA GPU: the base-config training step against PyTorch on the same
# GPU, pre-training through the real loader, then the GPU tests. Runs binaries built elsewhere
# (the GPU machine reaches no registry) from a carried folder:
#   cargo build --release --features cuda
#   cargo test -p ecamp-model --features cuda --release --test gpu --test gpu_oom --no-run
#   bash benches/gpu/prepare.sh            # strips and gzips both into .gpu/ with the tokenizer
# The PyTorch peer is benches/model_peer/ecamp_torch.py under the machine's own python3 (torch).
# Writes four files under $OUT (default /tmp/ecamp-gpu; the device tool returns at most eight):
# stages.txt, log.txt (each stage's output, the last 20 kB), machine.txt and the pre-training
# metrics. Every stage has its own time limit,
# capped by what is left of BUDGET seconds, and the next one runs whatever happened, so a slow or
# failing stage still leaves the others' numbers.
set -u
CARRIED=${CARRIED:-.gpu}
OUT=${OUT:-/tmp/ecamp-gpu}
WORK=${WORK:-/tmp/ecamp-gpu-work}
BUDGET=${BUDGET:-560}
PY=${PY:-python3}
BIN=$WORK/bin
mkdir -p "$OUT" "$WORK" "$BIN"
export ECAMP_KERNEL_CACHE=$WORK/kernels
for f in ecamp gpu-tests gpu_oom-tests; do gzip -dc "$CARRIED/$f.gz" >"$BIN/$f" && chmod +x "$BIN/$f"; done
cp "$CARRIED/mimic_wordpiece.json" "$BIN/"
stage() { # name limit command...
  local name=$1 limit=$2
  shift 2
  local left=$((BUDGET - SECONDS))
  ((left < limit)) && limit=$left
  if ((limit < 5)); then
    echo "$name: skipped (budget spent)" | tee -a "$OUT/stages.txt"
    return
  fi
  local t0=$SECONDS
  timeout "$limit" "$@" >"$WORK/$name.txt" 2>&1
  RC=$?
  echo "$name: rc=$RC in $((SECONDS - t0)) s (limit $limit s)" | tee -a "$OUT/stages.txt"
  { echo "=== $name (rc=$RC)"; tail -c 20000 "$WORK/$name.txt"; } >>"$OUT/log.txt"
}
{ nvidia-smi; nproc; "$PY" -c 'import torch; print(torch.__version__)'; } >"$OUT/machine.txt" 2>&1
PEER=(benches/model_peer/ecamp_torch.py bench-step --preset base --device cuda)

# 1. The training step alone on synthetic batches, base config, bf16 autocast: PyTorch eager
#    first (a sure number), then ecamp (burn CUDA + fusion, no matmul autotuning: the first step
#    compiles every kernel, ~45 s on an H200, printed as a warmup step on stderr). Batch 128:
#    at the official 256 ecamp ran out of the H200's memory (BENCHMARKS.md, "GPU").
stage peer_bf16 75 "$PY" "${PEER[@]}" --batch-size 128 --amp bf16 --steps 8 --warmup 3
stage step_bf16 150 "$BIN/ecamp" bench model --backend cuda --preset base --batch-size 128 \
  --precision bf16 --steps 8 --warmup 3 --json

# 2. Base-config pre-training on phantoms through the real loader (bf16, 64 per device): step
#    time, samples/s and data wait per step in metrics.jsonl. Kernels come from the cache that
#    stage 1 filled (batch 64 needs its own shapes: a first step of a few seconds).
stage ingest 40 "$BIN/ecamp" ingest --dataset "$WORK/ds" --source phantom:4096 --image-size 512 -q
stage vocab 30 "$BIN/ecamp" vocab build --dataset "$WORK/ds" --tokenizer "$BIN/mimic_wordpiece.json"
stage pin 20 "$BIN/ecamp" snapshot pin --dataset "$WORK/ds"
stage pretrain_bf16 100 "$BIN/ecamp" pretrain --dataset "$WORK/ds" --preset base --backend cuda \
  --precision bf16 --batch-size 64 --max-steps 40 --out "$WORK/run" --quiet --json
cp "$WORK/run/metrics.jsonl" "$OUT/pretrain_bf16_metrics.jsonl" 2>/dev/null

# 3. Correctness on the GPU: augmentation vs the f64 reference, forward vs ndarray, bf16/f16
#    autocast vs f32, training steps in f32 and bf16.
stage tests 120 "$BIN/gpu-tests" --nocapture --test-threads 1
stage oom_test 30 "$BIN/gpu_oom-tests" --nocapture

# 4. f32 (TF32 matmuls on both sides), if time is left.
stage peer_f32 45 "$PY" "${PEER[@]}" --batch-size 128 --amp none --steps 5 --warmup 2
stage step_f32 60 "$BIN/ecamp" bench model --backend cuda --preset base --batch-size 128 \
  --precision f32 --steps 5 --warmup 2 --json
du -sh "$ECAMP_KERNEL_CACHE" >>"$OUT/machine.txt" 2>&1
nvidia-smi --query-gpu=name,clocks.max.sm,memory.used --format=csv >>"$OUT/machine.txt" 2>&1
echo done | tee -a "$OUT/stages.txt"
