#!/usr/bin/env bash
# The README demo: replay a recording of held-out clips through the whole pipeline,
# print the events and publish them to MQTT (a local broker is started if none listens).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
HOST=127.0.0.1
PORT=${DEMO_MQTT_PORT:-1883}
OUT=build/demo
mkdir -p "$OUT"

"$BIN/python" -m bench.demo --out "$OUT/demo.flac"

started_broker=""
if ! (exec 3<>"/dev/tcp/$HOST/$PORT") 2>/dev/null; then
  MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
  printf 'listener %s %s\nallow_anonymous true\npersistence false\n' "$PORT" "$HOST" > "$OUT/mosquitto.conf"
  "$MOSQUITTO" -c "$OUT/mosquitto.conf" > "$OUT/mosquitto.log" 2>&1 &
  started_broker=$!
  for _ in $(seq 50); do (exec 3<>"/dev/tcp/$HOST/$PORT") 2>/dev/null && break; sleep 0.1; done
  echo "demo: started a local mosquitto on $HOST:$PORT"
fi
mosquitto_sub -h "$HOST" -p "$PORT" -t 'nursery/#' -v > "$OUT/mqtt.log" 2>&1 &
sub=$!
cleanup() { kill "$sub" 2>/dev/null || true; [ -n "$started_broker" ] && kill "$started_broker" 2>/dev/null || true; }
trap cleanup EXIT
sleep 0.5

echo "demo: replaying $OUT/demo.flac through capture -> gate -> window -> classify -> fuse -> events -> MQTT"
NURSERY_CONFIG=${NURSERY_CONFIG:-config.yaml} "$BIN/nursery-monitor" replay "$OUT/demo.flac" \
  --events-jsonl "$OUT/events.jsonl"
sleep 1
echo
echo "demo: what a subscriber saw (mosquitto_sub -t 'nursery/#' -v):"
cut -c1-220 "$OUT/mqtt.log"
