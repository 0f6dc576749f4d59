#!/usr/bin/env bash
# Gathers what benches/gpu/run.sh needs into .gpu/ (gzipped stripped binaries and the tokenizer,
# ~40 MB: the device tool carries at most 64 MiB). Build first (see run.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
rm -rf .gpu && mkdir -p .gpu
strip -o .gpu/ecamp target/release/ecamp
tests=$(ls -t target/release/deps/gpu-* | grep -v '\.d$' | head -n 1)
strip -o .gpu/gpu-tests "$tests"
gzip -9 .gpu/ecamp .gpu/gpu-tests
cp ../shared/data/mimic_wordpiece.json .gpu/
du -sh .gpu/*
