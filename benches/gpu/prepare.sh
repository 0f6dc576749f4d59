#!/usr/bin/env bash
# Gathers what benches/gpu/run.sh needs into .gpu/ (gzipped stripped binaries and the tokenizer,
# ~55 MB: the device tool carries at most 64 MiB). Build first (see run.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
rm -rf .gpu && mkdir -p .gpu
strip -o .gpu/ecamp target/release/ecamp
for t in gpu gpu_oom; do
  bin=$(ls -t target/release/deps/$t-* | grep -v '\.d$' | head -n 1)
  strip -o ".gpu/$t-tests" "$bin"
done
gzip -9 .gpu/ecamp .gpu/gpu-tests .gpu/gpu_oom-tests
cp ../shared/data/mimic_wordpiece.json .gpu/
du -sh .gpu/*
