#!/usr/bin/env bash
# The 256-stream soak on the GPU machine, in two device calls (one call may run 10 minutes at most):
#   bash bench/soak_gpu.sh start  MODEL_SPEC   # builds the model, starts server + soak detached, returns at ~9.5 min
#   bash bench/soak_gpu.sh finish              # waits for the soak to end, copies figures and logs to $OUT
#   bash bench/soak_gpu.sh serve  MODEL_SPEC   # only builds the model and starts the server (bench/gpu_run.sh soak)
# Both processes are started with setsid so they outlive the first call. Results land in /tmp/soak/.
set -euo pipefail
phase=${1:?start, finish or serve}
dir=/tmp/soak
port=65531
if [ "$phase" = start ] || [ "$phase" = serve ]; then
    spec=${2:-v7:1.6B}
    mkdir -p "$dir"
    python3 -m bench.soak_model "$spec" "$dir/model.st"
    cat > "$dir/Config.toml" <<TOML
[model]
path = "$dir/model.st"
precision = "fp16"
max_batch = 256
token_chunk_size = 256
[listen]
ip = "127.0.0.1"
port = $port
[limits]
max_queue = 64
TOML
    setsid nohup python3 -m backend --config "$dir/Config.toml" >"$dir/server.log" 2>&1 < /dev/null &
    python3 - "$port" <<'PY'
import json, sys, time, urllib.request
for _ in range(300):
    try:
        print(json.load(urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/health")))
        break
    except OSError:
        time.sleep(1)
PY
    [ "$phase" = serve ] && exit 0
    setsid nohup python3 -m bench.soak "http://127.0.0.1:$port" --streams "${SOAK_STREAMS:-256}" --minutes "${SOAK_MINUTES:-10}" --warmup 15 \
        --out "$dir/soak.json" >"$dir/soak.log" 2>&1 < /dev/null &
    # Keep the machine busy (it goes back when idle) until just before this call's limit.
    while [ "$SECONDS" -lt "${SOAK_HOLD:-570}" ]; do sleep 10; done
    tail -3 "$dir/soak.log"
else
    while [ ! -s "$dir/soak.json" ] && pgrep -f bench.soak >/dev/null; do sleep 5; done
    cat "$dir/soak.log"
    mkdir -p "$OUT" && cp "$dir"/soak.json "$dir"/soak.log "$OUT"/ 2>/dev/null || true
    tail -c 20000 "$dir/server.log" > "$OUT/server.log.tail"
    grep -ciE "error|traceback" "$dir/server.log" || true
fi
