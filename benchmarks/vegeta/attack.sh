#!/usr/bin/env bash
# Open-loop load with vegeta at a rate schedule: `vegeta attack | vegeta report` per rate.
#
#   benchmarks/vegeta/attack.sh TARGETS [RATES] [DURATION]
#
#   TARGETS   a vegeta targets file, e.g. benchmarks/vegeta/targets/small.v2-json.targets
#             (committed: small and mlp x v1, v2-json, v2-binary at http://127.0.0.1:8080), or one
#             written for any served model by `python benchmarks/loadgen.py targets --model NAME ...`
#   RATES     space-separated requests/s, default "250 500 1000 2000 4000"
#   DURATION  per rate, default 5s
#   URL=http://127.0.0.1:9000 in the environment retargets the committed files to another port.
#
# Run from anywhere; body paths in the committed targets are relative to the repository root.
# Keeps each rate's raw results and JSON report in benchmarks/results/vegeta/; prints vegeta's text
# report per rate and a summary table at the end. Traffic goes to 127.0.0.1 only.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
if ! command -v vegeta >/dev/null 2>&1; then
  echo "vegeta is not on PATH (https://github.com/tsenart/vegeta/releases); nothing run" >&2
  exit 3
fi
TARGETS="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
RATES="${2:-250 500 1000 2000 4000}"
DURATION="${3:-5s}"
OUT="$ROOT/benchmarks/results/vegeta"
mkdir -p "$OUT"
cd "$ROOT"
name="$(basename "$TARGETS" .targets)"
if [[ -n "${URL:-}" ]]; then
  sed "s#http://127.0.0.1:8080#${URL%/}#" "$TARGETS" > "$OUT/$name.targets"
  TARGETS="$OUT/$name.targets"
fi
if grep -E '^(GET|POST|PUT) ' "$TARGETS" | grep -vqE '^(GET|POST|PUT) http://(127\.0\.0\.1|localhost)[:/]'; then
  echo "refusing: $TARGETS names a host other than 127.0.0.1/localhost" >&2
  exit 2
fi
for rate in $RATES; do
  echo "== $name at $rate req/s for $DURATION"
  vegeta attack -targets="$TARGETS" -rate="$rate" -duration="$DURATION" -keepalive=true -timeout=10s \
    -max-workers=1024 | tee "$OUT/$name-$rate.bin" | vegeta report
  vegeta report -type=json "$OUT/$name-$rate.bin" > "$OUT/$name-$rate.json"
done
echo
echo "| rate | throughput req/s | success | p50 ms | p90 ms | p99 ms |"
echo "|---:|---:|---:|---:|---:|---:|"
for rate in $RATES; do
  python3 - "$OUT/$name-$rate.json" "$rate" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); l = r["latencies"]
print(f"| {sys.argv[2]} | {r['throughput']:.1f} | {r['success']:.2%} | {l['50th']/1e6:.2f} | {l['90th']/1e6:.2f} | {l['99th']/1e6:.2f} |")
PY
done
