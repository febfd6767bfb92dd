#!/usr/bin/env bash
# Every GPU measurement of RESULTS.md, in order of importance, on this machine's first GPU:
#   bash benchmarks/gpu_suite.sh OUT_DIR [SECONDS] [PARTS]
# Each part writes OUT_DIR/<part>.txt (its table) and .log (everything else). A part starts only
# with 30 s of the SECONDS budget (default 3600) left and is stopped when the budget is spent, so
# a call under a time limit still ends with OUT_DIR/results.tgz. PARTS, a regular expression,
# picks parts by name (default: all), e.g. 'tests|main_(7M|30M)' for one call, the rest later.
set -uo pipefail
out=${1:?usage: gpu_suite.sh OUT_DIR [SECONDS] [PARTS]}; budget=${2:-3600}; only=${3:-.*}
mkdir -p "$out"; cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 WANDB_MODE=offline
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-$out/cache/inductor}  # tests, loss_head
export TRITON_CACHE_DIR=${TRITON_CACHE_DIR:-$out/cache/triton}
# One compile cache for the throughput rows: a shape compiles once (the plain loop and a job
# compile the same graphs), not once per row. Only first_step_cold compiles in fresh ones.
B="python benchmarks/throughput.py --device cuda"
T="$B --compile-cache $out/cache/bench"

part() {  # part NAME LIMIT_SECONDS COMMAND...: run COMMAND if chosen and the budget allows
  local name=$1 limit=$2; shift 2
  [[ $name =~ ^($only)$ ]] || return 0
  local left=$((budget - SECONDS))
  if ((left < 30)); then echo "skipped $name (budget)"; return; fi
  echo "== $name (at ${SECONDS}s)"
  timeout "$((limit < left ? limit : left))" "$@" >"$out/$name.txt" 2>"$out/$name.log" ||
    echo "$name: exit $?"
}

nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,driver_version --format=csv >"$out/gpu.txt"
part tests 300 python -m pytest -m gpu tests/test_gpu.py -q -p no:cacheprovider
for shape in 7M 30M 124M 355M 760M; do
  part "main_$shape" 600 $T --shapes $shape \
    --variants plain,scalinglab-compiled,scalinglab,plain-loader
done
part sync_7M 300 $T --shapes 7M --variants scalinglab-compiled --steps 12 --sync-debug
part host 300 $T --shapes host --variants plain,scalinglab-compiled,scalinglab --steps 300
part profile_7M 300 $T --shapes 7M --variants scalinglab-compiled --steps 5 --profile "$out/trace"
part loss_head 300 python benchmarks/loss_head.py --chunk-sizes 2048,4096,8192
part packing 900 $T --shapes 7M,30M --variants plain,scalinglab-compiled --processes 1,2,4,8
part data 600 $T --shapes 7M,124M --variants scalinglab-compiled --data memory,shards
# First steps, compilation included: both loops cold, then (once a run has filled the cache) warm.
part first_step_cold 300 $B --shapes 7M --warmup 2 --steps 5 --variants plain,scalinglab-compiled
part first_step_fill 300 $T --shapes 7M --warmup 2 --steps 5 --variants plain
part first_step_warm 300 $T --shapes 7M --warmup 2 --steps 5 --variants plain,scalinglab-compiled
part compile_cache 300 scaling-train -m launcher=local_gpus 'hydra.launcher.gpus=[0]' \
  trainer=gpu compile=true model=gpt model.d_model=128 model.n_layers=4 model.n_heads=4 \
  data.seq_len=1024 trainer.max_steps=5 scheduler.warmup_steps=1 seed=0,1 paths.compile_cache_dir="$out/cache/jobs" \
  hydra.sweep.dir="$out/jobs"
grep -ho '"first_step_s": [0-9.]*' "$out"/jobs/*/run.json >"$out/compile_cache.txt" 2>/dev/null

tar czf "$out.tgz" -C "$out" --exclude cache --exclude results.tgz . && mv "$out.tgz" "$out/results.tgz"
cat "$out/gpu.txt"
tail -n 3 "$out/tests.txt" 2>/dev/null
grep -h '^| ' "$out"/*.txt 2>/dev/null
grep -c '^SYNC' "$out/sync_7M.log" 2>/dev/null
cat "$out/compile_cache.txt" 2>/dev/null
true
