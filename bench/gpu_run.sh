#!/usr/bin/env bash
# The GPU-run issue's measurements, one phase per device call (a call may run 10 minutes at most).
# Run from the repository root on the GPU machine with carry [".gl", ".whl"] (shared/device.md says how
# to fill them: the Vulkan loader's .debs, and wheels of wgpu, web-rwkv-py 0.2.3 and the server's deps):
#   bash bench/gpu_run.sh speed-1.6B  # engine_speed v6/v7 1.6B beside web-rwkv-py; the tiled kernel instead
#                                     # of vec; profile_step at 1/64/1024 tokens; step_cost (host µs);
#                                     # what cooperative matrices do there (bench/coop_probe.py)
#   bash bench/gpu_run.sh speed-big   # engine_speed v6 3B, v6 7B, v7 7B, v6 7B int8 and nf4 beside web-rwkv-py
#   bash bench/gpu_run.sh all         # the most important of the first two, in one call, bounded by LIMIT s
#   bash bench/gpu_run.sh recheck     # after a kernel change: v6/v7 oracle tests, 1.6B speed and profile, tests/engine
#   bash bench/gpu_run.sh soak        # the server: 64 then 256 streams for 60 s each; then the engine's oracle tests
#   bash bench/gpu_run.sh decide      # ~4 min: 1.6B with the defaults, slicing off, scalar LoRA reads, chunked
#   bash bench/gpu_run.sh candidate   # ~5 min: the f32 GEMM tiers against the f16 64x64 tile from 17 or 33 tokens
#   bash bench/gpu_run.sh longtiles   # ~6 min: the defaults beside web-rwkv-py, and f16 128x128 tiles for long steps
#   bash bench/gpu_run.sh smallgemm   # ~6 min: the LoRAs' first stages through the GEMM from 17 tokens, or from 129
#   LIMIT=560 bash bench/gpu_run.sh next   # ~9 min: the next GPU call (NOTES 21): 7B now, and the 129-256 tier
#   LIMIT=560 bash bench/gpu_run.sh probe22  # ~9 min: v6/v7 decode rows with the split time mix; 64/128-token tiles
#   LIMIT=560 bash bench/gpu_run.sh tiers22  # ~9 min: the engine with probe22's tiles against the defaults
#   LIMIT=560 bash bench/gpu_run.sh cold22  # ~8 min: the tune with cold weights, its tiers in the engine
#   LIMIT=380 bash bench/gpu_run.sh double22  # ~6 min: the GEMM double-buffered against single
#   LIMIT=560 bash bench/gpu_run.sh sweep  # ~8 min: engine variants in turn (bench.engine_sweep), medians and spreads
#   (and profile, retune, seven, slices, chunk, tune, gemm, engine, last: each says what it does at its case)
# Session 20 (NOTES 20) ran: LIMIT=560 bash bench/gpu_run.sh decide, then profile, seven and retune, on one H100.
# Session 21 (NOTES 21) ran: candidate, longtiles, seven (the f16 tiers as AI00_GEMM) and smallgemm.
# Session 22 (NOTES 22) ran: probe22, tiers22, cold22, next and double22; it left `sweep` for the next call.
# Figures land in $OUT as <gpu>-<date>-*.json / *.txt.
set -uo pipefail
phase=${1:?speed-1.6B, speed-big or soak}
for f in .gl/*.deb; do dpkg -x "$f" /; done
ldconfig
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 TQDM_DISABLE=1
icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
[ -f $icd ] && export VK_DRIVER_FILES=$icd
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | grep -oiE 'h100|h200|a100|l4' | tr A-Z a-z)
tag="$OUT/${gpu:-gpu}-$(date -u +%F)"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
# the GPU's clocks, temperature, power and throttle reasons at the start and the end of the phase: the same
# setting moved up to 25 % between calls (NOTES 22), and these say whether the machine did
clocks() {
    { nvidia-smi --query-gpu=clocks.sm,clocks.max.sm,clocks.mem,temperature.gpu,power.draw --format=csv,noheader
      nvidia-smi --query-gpu=clocks_event_reasons.active --format=csv,noheader 2>/dev/null \
          || nvidia-smi --query-gpu=clocks_throttle_reasons.active --format=csv,noheader; } 2>&1 \
        | sed "s/^/$1: /" | tee -a "$tag-clocks-$phase.txt"
}
clocks start
trap 'clocks end' EXIT

limit=${LIMIT:-560}  # the call's seconds; each step below gets what is left (a killed step keeps its JSON)
left() { local n=$((limit - SECONDS)); echo $((n > 1 ? n : 1)); }

case $phase in
engine)  # after a kernel change: 1.6B beside web-rwkv-py, profiles (prefill 16/64/1,024 tokens, 64 decode rows;
         # each short step also with the recurrence split), the v6/v7 oracle tests on this GPU
    timeout $(left) python3 -m bench.engine_speed --model v6:1.6B --model v7:1.6B --web-rwkv --chunk 1024 \
        --out "$tag-speed-1.6B-engine.json" 2>&1 | grep -v upload
    for m in v6:1.6B v7:1.6B; do
        timeout $(left) python3 -m bench.profile_step --model $m --tokens 16 --tokens 64 --tokens 1024
        AI00_WKV=split timeout $(left) python3 -m bench.profile_step --model $m --tokens 16 --tokens 64
        timeout $(left) python3 -m bench.profile_step --model $m --rows 64 --tokens 64
        AI00_WKV=split timeout $(left) python3 -m bench.profile_step --model $m --rows 64 --tokens 64
    done 2>&1 | grep -v upload | tee "$tag-profile-1.6B-engine.txt" | grep -A3 "^=="
    timeout 150 python3 -m pytest tests/engine/test_models_vs_oracle.py tests/engine/test_fused_kernel_paths.py -q \
        -x -p no:cacheprovider -k "V6 or V7 or v6 or v7" 2>&1 | tail -4 | tee "$tag-engine-tests.txt"
    ;;
gemm)  # the GEMM's tiles tuned again (K split inside small tiles), the engine with the winners (AI00_GEMM) beside
       # web-rwkv-py, the v6/v7 oracle tests on this GPU, then profiles of 64- and 1,024-token steps
    timeout 240 python3 -m bench.gemm_tune --tokens 8 16 32 64 128 256 1024 --emit /tmp/tiers --tile \
        16x16x1x4 16x16x1x4x4x2 16x16x1x4x4x4 16x16x1x4x8x2 32x16x2x4x4x4 16x32x2x4x4x4 32x32x4x4 \
        32x32x4x4x4x2 32x32x4x4x4x4 64x16x4x4x4x2 64x32x4x4x4x2 64x64x4x4x8 64x64x8x4 128x128x8x8x8 \
        128x64x8x8x8 2>&1 | tee "$tag-gemm-tune-2.txt" | grep -v '"kernel"'
    export AI00_GEMM=$(cat /tmp/tiers)
    timeout $(left) python3 -m bench.engine_speed --model v6:1.6B --model v7:1.6B --web-rwkv --chunk 1024 \
        --out "$tag-speed-1.6B-gemm.json" 2>&1 | grep -v upload
    timeout 150 python3 -m pytest tests/engine/test_models_vs_oracle.py tests/engine/test_fused_kernel_paths.py -q \
        -x -p no:cacheprovider -k "V6 or V7 or v6 or v7" 2>&1 | tail -15 | tee "$tag-gemm-tests.txt"
    for m in v6:1.6B v7:1.6B; do
        timeout $(left) python3 -m bench.profile_step --model $m --tokens 64 --tokens 1024
    done 2>&1 | grep -v upload | tee "$tag-profile-1.6B-gemm.txt"
    ;;
slices)  # K sliced over workgroups (gemm_slices.k_slices) and the scans' vector sums: the GEMM's tiles with and
        # without slices on the 1.6B/7B shapes (and three f16 tiles, "h"), the engine beside web-rwkv-py,
        # profiles at 16/64/1,024 tokens and 64 decode rows with slicing on and off (AI00_GEMM_SLICES=1),
        # the engine as it was before (.base)
    timeout 200 python3 -m bench.gemm_tune --tokens 16 64 256 1024 --budget 0.015 --emit /tmp/tiers \
        --shape 2048x2048 7168x2048 2048x7168 4096x14336 --tile 32x16x2x4x4x4 16x32x2x4x4x4 64x32x4x4x4x2 \
        64x64x4x4x8 64x64x8x4 128x128x8x8x8 64x32x4x4x4x2h 64x64x8x4h 128x128x8x8x8h 2>&1 \
        | tee "$tag-gemm-tune-slices.txt" | grep -v '"kernel"'
    timeout $(left) python3 -m bench.engine_speed --model v6:1.6B --model v7:1.6B --web-rwkv --chunk 1024 \
        --out "$tag-speed-1.6B-slices.json" 2>&1 | grep -v upload
    for m in v7:1.6B v6:1.6B; do
        for s in "" 1; do
            AI00_GEMM_SLICES=$s timeout $(left) python3 -m bench.profile_step --model $m --tokens 16 --tokens 64 \
                --tokens 1024
            AI00_GEMM_SLICES=$s timeout $(left) python3 -m bench.profile_step --model $m --rows 64 --tokens 64
        done
    done 2>&1 | grep -v upload | tee "$tag-profile-1.6B-slices.txt" | grep -A3 "^=="
    if [ -d .base ]; then
        (cd .base && PYTHONPATH=/tmp/site:$PWD timeout $(left) python3 -m bench.engine_speed --model v6:1.6B \
            --model v7:1.6B --chunk 1024 --out "$tag-speed-1.6B-before-slices.json" 2>&1 | grep -v upload)
    fi
    ;;
decide)  # the defaults that wait on a GPU, in one short call: 1.6B v6/v7 with K slicing on (the default) beside
        # web-rwkv-py, with it off (AI00_GEMM_SLICES=1), with the recurrences' LoRA second stages read a float at
        # a time (AI00_LORA_VEC4=0, the code before), and with the chunked recurrences from 9 tokens
    for run in "on - v6:1.6B,v7:1.6B --web-rwkv" "off AI00_GEMM_SLICES=1 v6:1.6B,v7:1.6B" \
        "lora-scalar AI00_LORA_VEC4=0 v6:1.6B,v7:1.6B" "chunked AI00_WKV_CHUNKED_MIN=9 v6:1.6B,v7:1.6B"; do
        set -- $run
        env ${2/#-/AI00_NOTHING=} timeout $(left) python3 -m bench.engine_speed --model ${3/,/ --model } \
            --chunk 1024 --steps 32 ${4:-} --out "$tag-speed-1.6B-decide-$1.json" 2>&1 | grep -v upload
    done
    ;;
profile)  # after `decide`: the v6/v7 oracle tests on this GPU, then where a step's time goes at 1, 64 and 1,024
         # tokens in one row and at 64 decode rows
    timeout 150 python3 -m pytest tests/engine/test_models_vs_oracle.py tests/engine/test_fused_kernel_paths.py -q \
        -x -p no:cacheprovider -k "V6 or V7 or v6 or v7" 2>&1 | tail -4 | tee "$tag-profile-tests.txt"
    for m in v7:1.6B v6:1.6B; do
        timeout $(left) python3 -m bench.profile_step --model $m --tokens 1 --tokens 64 --tokens 1024
        timeout $(left) python3 -m bench.profile_step --model $m --rows 64 --tokens 64
    done 2>&1 | grep -v upload | tee "$tag-profile-1.6B.txt" | grep -A4 "^=="
    ;;
retune)  # the GEMM's tiles tuned with K slices and three f16 tiles on the 1.6B/7B shapes, then 1.6B with the
         # winning tiers (AI00_GEMM), to compare with `decide`'s defaults
    timeout 200 python3 -m bench.gemm_tune --tokens 16 64 256 1024 --budget 0.015 --emit /tmp/tiers \
        --shape 2048x2048 7168x2048 2048x7168 4096x14336 --tile 32x16x2x4x4x4 16x32x2x4x4x4 64x32x4x4x4x2 \
        64x64x4x4x8 64x64x8x4 128x128x8x8x8 64x32x4x4x4x2h 64x64x8x4h 128x128x8x8x8h 2>&1 \
        | tee "$tag-gemm-retune.txt" | grep -v '"kernel"'
    cat /tmp/tiers
    AI00_GEMM=$(cat /tmp/tiers) timeout $(left) python3 -m bench.engine_speed --model v6:1.6B --model v7:1.6B \
        --chunk 1024 --steps 32 --out "$tag-speed-1.6B-retuned.json" 2>&1 | grep -v upload
    ;;
candidate)  # GEMM_TIERS (f32, the default before NOTES 21: the baseline, same call), with `retune`'s f16 64x64 tile
           # from 17 tokens, from 33, and from 17 up to 128 tokens
    for run in "defaults 9:32x16x2x4x4x4,17:16x32x2x4x4x4,33:64x32x4x4x4x2,65:64x64x4x4x8,129:64x64x8x4,257:128x128x8x8x8" \
        "f16-17 9:32x16x2x4x4x4,17:64x64x8x4h,65:64x64x4x4x8,129:64x64x8x4,257:128x128x8x8x8" \
        "f16-33 9:32x16x2x4x4x4,17:16x32x2x4x4x4,33:64x64x8x4h,65:64x64x4x4x8,129:64x64x8x4,257:128x128x8x8x8" \
        "f16-17-128 9:32x16x2x4x4x4,17:64x64x8x4h,129:64x64x8x4,257:128x128x8x8x8"; do
        set -- $run
        AI00_GEMM=$2 timeout $(left) python3 -m bench.engine_speed --model v6:1.6B --model v7:1.6B --chunk 1024 \
            --steps 32 --out "$tag-speed-1.6B-candidate-$1.json" 2>&1 | grep -v upload
    done
    ;;
longtiles)  # the defaults (GEMM_TIERS_F16 on an f16 adapter) beside web-rwkv-py, then f16 128x128 tiles for long
           # steps: from 129 tokens (sliced to 256, whole after), and from 257 after the f16 64x64 one
    timeout $(left) python3 -m bench.engine_speed --model v6:1.6B --model v7:1.6B --web-rwkv --chunk 1024 --steps 32 \
        --out "$tag-speed-1.6B-f16tiers.json" 2>&1 | grep -v upload
    for run in "h128-129 9:32x16x2x4x4x4,17:64x64x8x4h,129:128x128x8x8x8h" \
        "h128-257 9:32x16x2x4x4x4,17:64x64x8x4h,129:64x64x8x4h,257:128x128x8x8x8h"; do
        set -- $run
        AI00_GEMM=$2 timeout $(left) python3 -m bench.engine_speed --model v6:1.6B --model v7:1.6B --chunk 1024 \
            --steps 32 --out "$tag-speed-1.6B-longtiles-$1.json" 2>&1 | grep -v upload
    done
    ;;
smallgemm)  # the LoRAs' first stages through the GEMM from 17 tokens (AI00_SMALL_GEMM_MIN; default 129, the tiled
           # kernel with the LayerNorm inside below), against the defaults in the same call; then their 64-row profiles
    for min in 129 17; do
        AI00_SMALL_GEMM_MIN=$min timeout $(left) python3 -m bench.engine_speed --model v6:1.6B --model v7:1.6B \
            --chunk 1024 --steps 32 --out "$tag-speed-1.6B-smallgemm-$min.json" 2>&1 | grep -v upload
    done
    for min in 129 17; do
        for m in v6:1.6B v7:1.6B; do
            AI00_SMALL_GEMM_MIN=$min timeout $(left) python3 -m bench.profile_step --model $m --rows 64 --tokens 64
        done
    done 2>&1 | grep -v upload | tee "$tag-profile-1.6B-smallgemm.txt" | grep -A8 "^=="
    ;;
probe22)  # session 22's first call (NOTES 22): the time mix's split form for many decode rows (AI00_WKV=split:
         # LoRA dots read once per 8 tokens) against the default in the same call, then GEMM tiles for 64 and
         # 128 tokens (bigger K stages, so the f16 sums fold into f32 less often; other thread shapes)
    for wkv in default split; do
        AI00_WKV=${wkv/default/} timeout $(left) python3 -m bench.engine_speed --model v7:1.6B --model v6:1.6B \
            --chunk 1024 --steps 32 --out "$tag-speed-1.6B-wkv-$wkv.json" 2>&1 | grep -v upload
    done
    timeout $(left) python3 -m bench.gemm_tune --tokens 64 128 --budget 0.01 --slices 4 8 \
        --shape 2048x2048 7168x2048 2048x7168 65536x2048 --tile 64x64x8x4h 64x64x8x4x8h 64x64x8x4x16h \
        64x64x8x8x8h 64x64x4x4x8h 64x64x4x8x8h 128x64x8x8x8h 128x64x8x4x8h 32x64x4x8x8h 32x64x4x4x8h \
        64x64x8x4x4x2h 64x32x8x4x8h 64x128x8x8x8h 128x128x8x8x8h 64x128x4x8x8h 2>&1 \
        | tee "$tag-gemm-tune-22.txt" | grep -v '"kernel"'
    ;;
tiers22)  # session 22's second call (NOTES 22): probe22's tune had, at 64 tokens, the 64x64 f16 tile faster with
         # 16-vec4 stages, and at 128 tokens the f16 128x128 tile (sliced) ~3x the 64x64 one: the engine with the
         # tiers so changed, against the defaults in the same call; the tune at 32 tokens for the 17-32 tier
    timeout 100 python3 -m bench.gemm_tune --tokens 32 --budget 0.01 --slices 4 8 --shape 2048x2048 7168x2048 \
        2048x7168 --tile 32x16x2x4x4x4 64x64x8x4h 64x64x8x4x8h 64x64x8x4x16h 64x32x8x4x8h 64x32x8x4x16h \
        32x32x4x4x8h 32x32x4x4x16h 2>&1 | tee "$tag-gemm-tune-22-32.txt" | grep -v '"kernel"'
    for run in "default" \
            "b16-h128 9:32x16x2x4x4x4,17:64x64x8x4x16h,65:128x128x8x8x8h,257:128x128x8x8x8h" \
            "b16-h64x128 9:32x16x2x4x4x4,17:64x64x8x4x16h,65:64x128x8x8x8h,129:128x128x8x8x8h,257:128x128x8x8x8h"; do
        set -- $run
        AI00_GEMM=${2:-} timeout $(left) python3 -m bench.engine_speed --model v6:1.6B --model v7:1.6B \
            --chunk 1024 --steps 32 --out "$tag-speed-1.6B-tiers22-$1.json" 2>&1 | grep -v upload | grep "^|"
    done
    ;;
cold22)  # session 22's third call (NOTES 22): tiers22's engine runs reversed probe22's tune (whose weights sat in
        # L2); the tune again with each dispatch's weights cold (--cold-mib), its winners in the engine against the
        # defaults in the same call
    timeout 240 python3 -m bench.gemm_tune --tokens 32 64 128 256 --budget 0.01 --slices 4 8 --cold-mib 256 \
        --emit /tmp/tiers --shape 2048x2048 7168x2048 2048x7168 --tile 32x16x2x4x4x4 64x64x8x4h 64x64x8x4x8h \
        64x64x8x4x16h 64x32x8x4x8h 32x32x4x4x8h 128x128x8x8x8h 64x128x8x8x8h 128x64x8x8x8h 64x64x4x4x8h 2>&1 \
        | tee "$tag-gemm-tune-22-cold.txt" | grep -v '"kernel"'
    for run in "default" "cold 9:32x16x2x4x4x4,$(cat /tmp/tiers),257:128x128x8x8x8h"; do
        set -- $run
        echo "AI00_GEMM=${2:-}"
        AI00_GEMM=${2:-} timeout $(left) python3 -m bench.engine_speed --model v6:1.6B --model v7:1.6B \
            --chunk 1024 --steps 32 --out "$tag-speed-1.6B-cold22-$1.json" 2>&1 | grep -v upload | grep "^|"
    done
    ;;
double22)  # session 22's last call (NOTES 22): the GEMM's stages in two workgroup-memory buffers (one barrier a
          # stage; AI00_GEMM_BUFFERS=2) against one, then again one (the spread), and its tile tests on this GPU.
          # Needs commit 81c647f's engine: the double form lost 4-10 % at 64/128 streams and was taken out after
    timeout 60 python3 -m pytest tests/engine/test_gemm_tiles.py -q -p no:cacheprovider -k "double or f16" 2>&1 \
        | tail -2 | tee "$tag-double22-tests.txt"
    for buffers in 1 2 1; do
        AI00_GEMM_BUFFERS=$buffers timeout $(left) python3 -m bench.engine_speed --model v6:1.6B --model v7:1.6B \
            --chunk 1024 --steps 32 --out "$tag-speed-1.6B-double22-$buffers-$SECONDS.json" 2>&1 | grep -v upload \
            | grep "^| v"
    done
    ;;
sweep)  # variants of the engine side by side (bench.engine_sweep: weights filled once a model, the variants in
       # turn for 3 rounds, each figure's median and spread), session 22's leads (NOTES 22): the v6/v7 recurrences
       # with four invocations a channel (the one kernel: batch 1 to 128 streams; the scan: prefill), v7's split time mix
       # for decode rows (128 streams), the 33-64 tier as the cold tune's 64x64x4x4x8h, every GEMM's K in 8 slices
       # (the cold tune's weights moved 60-250 GB/s at 64 tokens: too few in flight?), and session 23's shaders
       # without wgpu's runtime checks (`unchecked`), after the check that both give the same logits on this GPU's
       # own plan (lavapipe never runs the 32-lane kernels)
    timeout 100 python3 -m pytest tests/engine/test_shader_module.py -q -p no:cacheprovider 2>&1 | tail -3 \
        | tee "$tag-tests-shader-checks.txt"
    timeout $(left) python3 -m bench.engine_sweep --model v7:1.6B --model v6:1.6B --streams 1 32 64 128 --rounds 3 \
        --variant default --variant "quad AI00_WKV7_LANES=4 AI00_WKV6_LANES=4" --variant "split AI00_WKV=split" \
        --variant "t33 AI00_GEMM=9:32x16x2x4x4x4,17:64x64x8x4h,33:64x64x4x4x8h,65:64x64x8x4h,129:128x128x8x8x8h,257:128x128x8x8x8h" \
        --variant "unchecked AI00_SHADER_CHECKS=0" \
        --variant "s8 AI00_GEMM_SLICES=8" --out "$tag-sweep-1.6B.json" 2>&1 | grep -v upload
    ;;
next)  # what NOTES 21 left unmeasured: 7B with the defaults of session 21 beside web-rwkv-py (`seven`), then 1.6B
      # prefill in 256-token steps (the 129-256 tier): its f16 128x128 tile sliced (the default) against f16 64x64
    timeout $(left) python3 -m bench.engine_speed --model v7:7B --model v6:7B --web-rwkv --chunk 1024 --steps 32 \
        --tmp /tmp --out "$tag-speed-7B-next.json" 2>&1 | grep -v upload
    for run in "default" "h64-129 9:32x16x2x4x4x4,17:64x64x8x4h,129:64x64x8x4h,257:128x128x8x8x8h"; do
        set -- $run
        AI00_GEMM=${2:-} timeout $(left) python3 -m bench.engine_speed --model v6:1.6B --model v7:1.6B --chunk 256 \
            --steps 16 --out "$tag-speed-1.6B-chunk256-$1.json" 2>&1 | grep -v upload
    done
    ;;
seven)  # 7B v7 and v6 beside web-rwkv-py, prefill in 1,024-token steps
    timeout $(left) python3 -m bench.engine_speed --model v7:7B --model v6:7B --web-rwkv --chunk 1024 --steps 32 \
        --tmp /tmp --out "$tag-speed-7B.json" 2>&1 | grep -v upload
    ;;
chunk)  # the chunked recurrences (wkv_chunk.py v5/v6, wkv7_chunk.py v7) against the split scan: their oracle tests
       # here, 1.6B profiles at 64 and 1,024 tokens (v6 chunks of 16 and 32), prefill with them; then 7B beside
       # web-rwkv-py
    timeout 150 python3 -m pytest tests/engine/test_wkv6_forms.py tests/engine/test_fused_kernel_paths.py -q -x \
        -p no:cacheprovider -k "wkv6_forms or chunked or wkv7_forms" 2>&1 | tail -3 | tee "$tag-chunk-tests.txt"
    for run in "v6:1.6B split 16" "v6:1.6B chunked 16" "v6:1.6B chunked 32" "v7:1.6B split 16" "v7:1.6B chunked 16"; do
        set -- $run
        AI00_WKV=$2 AI00_WKV_CHUNK_LEN=$3 timeout $(left) python3 -m bench.profile_step --model $1 --tokens 64 \
            --tokens 1024
    done 2>&1 | grep -v upload | tee "$tag-profile-1.6B-chunk.txt" | grep -A4 "^=="
    AI00_WKV_CHUNKED_MIN=9 timeout $(left) python3 -m bench.engine_speed --model v6:1.6B --model v7:1.6B --chunk 1024 \
        --out "$tag-speed-1.6B-chunked.json" 2>&1 | grep -v upload
    timeout $(left) python3 -m bench.engine_speed --model v7:7B --model v6:7B --web-rwkv --chunk 1024 --steps 32 \
        --tmp /tmp --out "$tag-speed-7B-slices.json" 2>&1 | grep -v upload
    ;;
tune)  # the GEMM's tiles (bench/gemm_tune.py); then the engine as it was before them (.base: a checkout of
       # 419e9e6 carried beside the tree, if there) at 1.6B, prefill in one 1,024-token step
    timeout 330 python3 -m bench.gemm_tune 2>&1 | tee "$tag-gemm-tune.txt"
    if [ -d .base ]; then
        (cd .base && PYTHONPATH=/tmp/site:$PWD timeout $(left) python3 -m bench.engine_speed --model v6:1.6B \
            --model v7:1.6B --chunk 1024 --out "$tag-speed-1.6B-base.json")
    fi
    ;;
all)  # one call, most important first, each step bounded by the time left
    python3 -c "from backend.gpu.device import Gpu; g = Gpu(); print(g.summary, sorted(g.features))" \
        | tee "$tag-adapter.txt"
    timeout 45 python3 -m bench.coop_probe 2>&1 | tee "$tag-coop-probe.txt"
    timeout $(left) python3 -m bench.engine_speed --model v6:1.6B --model v7:1.6B --web-rwkv \
        --out "$tag-speed-1.6B.json"
    AI00_MATMUL=vec,gemm AI00_LN_INPUT= timeout $(left) python3 -m bench.step_cost --model v6:1.6B \
        --model v7:1.6B --rows 1 8 64 --repeat 20 2>&1 | grep '^{' | tee "$tag-step-cost.txt"
    for m in v6:1.6B v7:1.6B; do
        timeout $(left) python3 -m bench.profile_step --model $m --tokens 1 --tokens 64 --tokens 1024
    done 2>&1 | grep -v upload | tee "$tag-profile-1.6B.txt"
    AI00_MATMUL=tiled,gemm timeout $(left) python3 -m bench.engine_speed --model v6:1.6B --model v7:1.6B \
        --out "$tag-speed-1.6B-tiled.json"
    timeout $(left) python3 -m bench.engine_speed --model v6:7B:int8 --model v6:7B --model v7:7B --web-rwkv \
        --steps 32 --tmp /tmp --out "$tag-speed-7B.json"
    ;;
recheck)  # after a kernel change: its oracle tests there first, then the 1.6B figures, then every engine test
    timeout 150 python3 -m pytest tests/engine/test_models_vs_oracle.py tests/engine/test_fused_kernel_paths.py -q \
        -x -p no:cacheprovider -k "V6 or V7 or v6 or v7" 2>&1 | tail -15 | tee "$tag-recheck-tests.txt"
    timeout $(left) python3 -m bench.engine_speed --model v6:1.6B --model v7:1.6B --web-rwkv \
        --out "$tag-speed-1.6B-recheck.json"
    for m in v6:1.6B v7:1.6B; do
        timeout $(left) python3 -m bench.profile_step --model $m --tokens 1 --tokens 1024
    done 2>&1 | grep -v upload | tee "$tag-profile-1.6B-recheck.txt"
    timeout $(left) python3 -m pytest tests/engine -q -p no:cacheprovider 2>&1 | tail -15 \
        | tee "$tag-engine-tests.txt"
    ;;
last)  # little device time left: v7 1.6B's figures, then the server at 64 and 256 streams while time lasts
    timeout $(left) python3 -m bench.engine_speed --model v7:1.6B --out "$tag-speed-v7-1.6B-last.json"
    bash bench/soak_gpu.sh serve v7:1.6B
    for n in 64 256; do
        timeout $(left) python3 -m bench.soak http://127.0.0.1:65531 --streams $n --seconds 60 --warmup 10 \
            --out "$tag-soak-v7-1.6B-$n-streams.json"
    done
    pkill -f "backend --config /tmp/soak/Config.toml"
    ;;
speed-1.6B)
    python3 - <<'PY' | tee "$tag-adapter.txt"
from backend.gpu.device import Gpu
gpu = Gpu()
print(gpu.summary, "subgroup", gpu.subgroup_size)
print("features:", sorted(str(f) for f in gpu.device.features))
PY
    timeout 60 python3 -m bench.coop_probe 2>&1 | tee "$tag-coop-probe.txt"
    python3 -m bench.engine_speed --model v6:1.6B --model v7:1.6B --web-rwkv --out "$tag-speed-1.6B.json"
    AI00_MATMUL=tiled,gemm python3 -m bench.engine_speed --model v6:1.6B --model v7:1.6B \
        --out "$tag-speed-1.6B-tiled.json"
    for m in v6:1.6B v7:1.6B; do
        python3 -m bench.profile_step --model $m --tokens 1 --tokens 64 --tokens 1024
    done 2>&1 | tee "$tag-profile-1.6B.txt"
    AI00_MATMUL=vec,gemm AI00_LN_INPUT= python3 -m bench.step_cost --model v6:1.6B --model v7:1.6B \
        --rows 1 8 64 --repeat 20 2>&1 | tee "$tag-step-cost.txt"
    ;;
speed-big)
    python3 -m bench.engine_speed --model v6:3B --model v6:7B --model v6:7B:int8 --model v6:7B:nf4 \
        --model v7:7B --web-rwkv --steps 32 --tmp /tmp --out "$tag-speed-big.json"
    ;;
soak)
    bash bench/soak_gpu.sh serve v7:1.6B  # server on port 65531, log in /tmp/soak/server.log
    for n in 64 256; do
        python3 -m bench.soak http://127.0.0.1:65531 --streams $n --seconds 60 --warmup 10 \
            --out "$tag-soak-v7-1.6B-$n-streams.json"
    done
    pkill -f "backend --config /tmp/soak/Config.toml"
    cp /tmp/soak/server.log "$OUT/server.log"
    timeout "${TEST_SECONDS:-200}" python3 -m pytest tests/engine -q -x -p no:cacheprovider 2>&1 \
        | tee "$tag-engine-tests.txt" | tail -25
    ;;
esac
