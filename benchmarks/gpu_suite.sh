#!/usr/bin/env bash
# Every GPU measurement of RESULTS.md, in order of importance, on this machine's first GPU:
#   bash benchmarks/gpu_suite.sh OUT_DIR [SECONDS]
# Each part writes OUT_DIR/<part>.txt (its table) and .log (everything else); a part that would
# start after SECONDS (default 3600) is skipped. Ends with all the tables, and OUT_DIR/results.tgz.
set -uo pipefail
out=${1:?usage: gpu_suite.sh OUT_DIR [SECONDS]}; budget=${2:-3600}
mkdir -p "$out"; cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 WANDB_MODE=offline
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-$out/cache/inductor}  # shared by parts
export TRITON_CACHE_DIR=${TRITON_CACHE_DIR:-$out/cache/triton}
T="python benchmarks/throughput.py --device cuda"

part() {  # part NAME LIMIT_SECONDS COMMAND...: run COMMAND if the budget allows, for LIMIT at most
  local name=$1 limit=$2; shift 2
  if (( SECONDS + 30 > budget )); then echo "skipped $name (budget)"; return; fi
  echo "== $name (at ${SECONDS}s)"
  timeout "$limit" "$@" >"$out/$name.txt" 2>"$out/$name.log" || echo "$name: exit $?"
}

nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,driver_version --format=csv >"$out/gpu.txt"
part tests 300 python -m pytest -m gpu tests/test_gpu.py -q -p no:cacheprovider
for shape in 7M 30M 124M 355M 760M; do
  part "main_$shape" 600 $T --shapes $shape --variants plain,scalinglab-compiled,scalinglab,plain-loader
done
part loss_head 300 python benchmarks/loss_head.py --chunk-sizes 2048,4096,8192
part packing 900 $T --shapes 7M,30M --variants plain,scalinglab-compiled --processes 1,2,4,8
part data 600 $T --shapes 7M,124M --variants scalinglab-compiled --data memory,shards
part sync_7M 300 $T --shapes 7M --variants scalinglab-compiled --steps 12 --sync-debug
part host 300 $T --shapes host --variants plain,scalinglab-compiled,scalinglab --steps 300
part profile_7M 300 $T --shapes 7M --variants scalinglab-compiled --steps 5 --profile "$out/trace"
# First steps, compilation included: both loops cold, then (once a run has filled the cache) warm.
F="$T --shapes 7M --warmup 2 --steps 5"
part first_step_cold 300 $F --variants plain,scalinglab-compiled
part first_step_fill 300 $F --variants plain --compile-cache "$out/cache/bench"
part first_step_warm 300 $F --variants plain,scalinglab-compiled --compile-cache "$out/cache/bench"
part compile_cache 300 scaling-train -m launcher=local_gpus 'hydra.launcher.gpus=[0]' \
  trainer=gpu compile=true model=gpt model.d_model=128 model.n_layers=4 model.n_heads=4 \
  data.seq_len=1024 trainer.max_steps=5 seed=0,1 paths.compile_cache_dir="$out/cache/jobs" \
  hydra.sweep.dir="$out/jobs"
grep -ho '"first_step_s": [0-9.]*' "$out"/jobs/*/run.json >>"$out/compile_cache.txt" 2>/dev/null

tar czf "$out/results.tgz" -C "$out" --exclude cache --exclude results.tgz .
cat "$out/gpu.txt"; tail -n 3 "$out/tests.txt"
grep -h '^| ' "$out"/main_*.txt "$out"/loss_head.txt "$out"/packing.txt "$out"/data.txt \
  "$out"/host.txt "$out"/first_step_cold.txt "$out"/first_step_warm.txt
grep -c '^SYNC' "$out"/sync_7M.log
cat "$out/compile_cache.txt"
