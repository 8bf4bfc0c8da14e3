#!/usr/bin/env bash
# Drive superserve with Triton's own load generator, perf_analyzer, in open-loop
# request-rate mode over HTTP and gRPC, and keep its reports.
#
#   benchmarks/perf_analyzer.sh                       # defaults below
#   RATES=500:2000:500 COUNT=4000 benchmarks/perf_analyzer.sh
#
# perf_analyzer comes from tritonclient==2.51.0 (the newest whose binary runs on glibc 2.36;
# later wheels need a newer glibc), installed with --no-deps into its own venv so the newer
# tritonclient of the test venv stays untouched. It needs Debian's libb64-0d and
# libcudart.so.12 from PyPI's nvidia-cuda-runtime-cu12 (it loads without a GPU).
#
# Environment knobs:
#   PA_VENV   venv holding perf_analyzer (default build/pa-venv, created if missing)
#   RATES     --request-rate-range start:end:step (default 200:1000:400)
#   COUNT     requests per rate step (default 2000; --request-count, no stability windows)
#   DIST      poisson | constant (default poisson)
#   WORKERS   server workers (default 1); POLICY (default slackfit); BUNDLE (default embedded)
#   LATE      serve (default) | shed: the server's answer to a request that cannot meet its
#             deadline. perf_analyzer aborts the whole run on the first non-OK answer, so with
#             "shed" it stops at the first 504 (it cannot measure a shedding server past that
#             point); "serve" answers late instead and perf_analyzer reports the latencies.
#   SLO_MS    server default deadline (default: the profile rule); sent per request on gRPC
#   PROTOCOLS "http grpc" (default both)
#   OUT       report prefix (default benchmarks/results/perf_analyzer)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
PA_VENV=${PA_VENV:-build/pa-venv}
RATES=${RATES:-200:1000:400}
COUNT=${COUNT:-2000}
DIST=${DIST:-poisson}
WORKERS=${WORKERS:-1}
POLICY=${POLICY:-slackfit}
LATE=${LATE:-serve}
PROTOCOLS=${PROTOCOLS:-"http grpc"}
OUT=${OUT:-benchmarks/results/perf_analyzer}

# --- perf_analyzer ------------------------------------------------------------------------
if ! /sbin/ldconfig -p | grep -q 'libb64\.so\.0d'; then
  echo "perf_analyzer needs Debian's libb64-0d: apt-get install -y libb64-0d" >&2
  exit 1
fi
if [ ! -x "$PA_VENV/bin/perf_analyzer" ]; then
  echo "installing tritonclient==2.51.0 (perf_analyzer) into $PA_VENV"
  python3 -m venv "$PA_VENV"
  "$PA_VENV/bin/pip" install -q --no-deps tritonclient==2.51.0 nvidia-cuda-runtime-cu12
fi
CUDART_DIR=$(ls -d "$PA_VENV"/lib/python3*/site-packages/nvidia/cuda_runtime/lib | head -1)
export LD_LIBRARY_PATH="$CUDART_DIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
PA="$PA_VENV/bin/perf_analyzer"

mkdir -p "$(dirname "$OUT")"

# --- server -------------------------------------------------------------------------------
TMP=$(mktemp -d)
SERVER_PID=""
cleanup() {
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT
SERVE_ARGS=(serve --http-port 0 --grpc-port 0 --workers "$WORKERS" --policy "$POLICY" --late "$LATE"
            --ready-file "$TMP/ready.json")
[ -n "${BUNDLE:-}" ] && SERVE_ARGS+=(--bundle "$BUNDLE")
[ -n "${SLO_MS:-}" ] && SERVE_ARGS+=(--slo-ms "$SLO_MS")
"$PY" -m superserve.cli "${SERVE_ARGS[@]}" >"$TMP/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 1200); do
  [ -f "$TMP/ready.json" ] && break
  kill -0 "$SERVER_PID" 2>/dev/null || { echo "server exited:"; cat "$TMP/server.log"; exit 1; }
  sleep 0.1
done
[ -f "$TMP/ready.json" ] || { echo "server not ready after 120 s"; cat "$TMP/server.log"; exit 1; }
read -r HTTP_PORT GRPC_PORT SLO_MS < <("$PY" -c "import json,math,sys; d=json.load(open('$TMP/ready.json')); print(d['http_port'], d['grpc_port'], math.ceil(d['slo_ms']))")
echo "server ready: http $HTTP_PORT grpc $GRPC_PORT, SLO ${SLO_MS} ms, policy $POLICY, late=$LATE, $WORKERS worker(s)" | tee "${OUT}_server.txt"

# Real images: 200 labelled images of the bundle's subset, normalised as the model expects,
# in perf_analyzer's --input-data JSON format (the batch dimension is implicit: max_batch_size 1).
"$PY" - "$TMP/input.json" "${BUNDLE:-}" <<'EOF'
import json, sys
from pathlib import Path
from superserve.embedded import EMBEDDED_DIR, load_subset
from superserve.loadgen.payloads import normalize_images
root = Path(sys.argv[2]) if sys.argv[2] else EMBEDDED_DIR
x = normalize_images(load_subset(root / "subset.safetensors").images[:200].numpy())
json.dump({"data": [{"input": {"content": [round(float(v), 5) for v in img.ravel()], "shape": [1, 28, 28]}}
                    for img in x]}, open(sys.argv[1], "w"))
EOF

for proto in $PROTOCOLS; do
  # perf_analyzer 2.51 sends --request-parameter over gRPC only; over HTTP the server's
  # default deadline (the same SLO rule) applies.
  if [ "$proto" = http ]; then URL="127.0.0.1:$HTTP_PORT"; EXTRA=(); else
    URL="127.0.0.1:$GRPC_PORT"; EXTRA=(--request-parameter "slo_ms:${SLO_MS}:int"); fi
  echo "=== perf_analyzer $proto: rates $RATES ($DIST), $COUNT requests per rate ===" | tee "${OUT}_${proto}.txt"
  : >"${OUT}_${proto}.csv"
  # perf_analyzer refuses --request-count with a range of rates, so one run per rate.
  IFS=: read -r R0 R1 RS <<<"$RATES"
  for rate in $(seq "$R0" "${RS:-1}" "${R1:-$R0}"); do
    # --async: the sync default silently falls behind once latency x rate exceeds its threads.
    "$PA" -m supernet -u "$URL" -i "$proto" --async --request-rate-range "$rate" \
        --request-distribution "$DIST" --request-count "$COUNT" --input-data "$TMP/input.json" \
        "${EXTRA[@]}" --percentile 99 -f "$TMP/one.csv" 2>&1 | tee -a "${OUT}_${proto}.txt" \
      || echo "perf_analyzer ($proto, $rate/s) exited with an error; see ${OUT}_${proto}.txt"
    if [ -f "$TMP/one.csv" ]; then
      if [ -s "${OUT}_${proto}.csv" ]; then tail -n +2 "$TMP/one.csv" >>"${OUT}_${proto}.csv"; else cat "$TMP/one.csv" >"${OUT}_${proto}.csv"; fi
      rm -f "$TMP/one.csv"
    fi
  done
done
echo "server side (from /metrics):"
"$PY" -c "
import urllib.request
for line in urllib.request.urlopen('http://127.0.0.1:$HTTP_PORT/metrics').read().decode().splitlines():
    if line.startswith('superserve_requests_total'): print('  ', line)
" | tee -a "${OUT}_server.txt"
echo "wrote ${OUT}_{http,grpc}.txt/.csv and ${OUT}_server.txt"
