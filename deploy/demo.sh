#!/usr/bin/env bash
# `make run`: a local broker on a free loopback port (or BROKER=host:port), the pricing service when it
# exists, the fleet exporter, and the appliance on the bundled demo source, printing one line per object
# and per quote, with its live view in a browser and its Prometheus metrics at the URLs it prints.
# Stops on Ctrl-C, or after DURATION seconds when set.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
export PATH="$PATH:/usr/sbin"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT
free_port() { $PY -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

if [ -n "${BROKER:-}" ]; then
    host="${BROKER%:*}"
    port="${BROKER##*:}"
else
    host=127.0.0.1
    port="$(free_port)"
    conf="$(mktemp -d)/mosquitto.conf"
    # set_tcp_nodelay: without it the broker's Nagle delay adds 40 ms to every quote (docs/topics.md).
    printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\nset_tcp_nodelay true\n' "$port" >"$conf"
    mosquitto -c "$conf" >/dev/null 2>&1 &
    pids+=("$!")
    for _ in $(seq 50); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
        sleep 0.1
    done
    echo "demo: mosquitto on 127.0.0.1:$port (watch with: mosquitto_sub -p $port -t 'appliance/#' -v)"
fi

# One catalog per embedder version: the bundled 1.0.0, and the 1.1.0 that `make release-demo` rolls
# out (deploy/demo-release/), so quotes keep coming before, during and after the update.
catalog=.demo-state/catalog.sqlite
next_catalog=.demo-state/catalog-1.1.0.sqlite
if [ ! -s "$catalog" ] || [ -n "$(find models demo pricing/build.py -newer "$catalog" -print -quit)" ]; then
    $PY -m pricing catalog demo --out "$catalog" 2>/dev/null
fi
if [ ! -s "$next_catalog" ] || [ -n "$(find models demo deploy/demo-release pricing/build.py -newer "$next_catalog" -print -quit)" ]; then
    $PY -m pricing catalog demo --manifest deploy/demo-release/manifest.toml --out "$next_catalog" 2>/dev/null
fi
pricing_metrics="$(free_port)"
$PY -m pricing run --host "$host" --port "$port" --catalog "$catalog" --catalog "$next_catalog" \
    --index exact --stats-interval-s 30 --metrics-port "$pricing_metrics" &
pids+=("$!")
echo "demo: pricing service on the demo catalogs for embedder 1.0.0 and 1.1.0 (synthetic prices),"
echo "      its metrics on http://127.0.0.1:$pricing_metrics/metrics"

# The fleet exporter: every device's status and stats as Prometheus metrics (docs/fleet.md); point a
# Prometheus at it with deploy/prometheus/prometheus.yml.
fleet_metrics="$(free_port)"
$PY -m fleet run --host "$host" --port "$port" --listen-port "$fleet_metrics" 2>/dev/null &
pids+=("$!")
echo "demo: fleet exporter on http://127.0.0.1:$fleet_metrics/metrics"

# A local model repository (signed with demo keys kept in .demo-state/), served over HTTP, which the
# appliance checks every 30 s. `make release-demo` publishes a new embedder to it.
# Each demo starts from the bundled models, with a fresh repository and keys.
repo=.demo-state/ota-repo
rm -rf "$repo" .demo-state/ota-keys .demo-state/ota
.venv/bin/appliance-release --repo "$repo" --keys .demo-state/ota-keys init >/dev/null
ota_port="$(free_port)"
$PY -m http.server --bind 127.0.0.1 --directory "$repo" "$ota_port" >/dev/null 2>&1 &
pids+=("$!")
export APPLIANCE_OTA__ENABLED=true APPLIANCE_OTA__REPOSITORY_URL="http://127.0.0.1:$ota_port"
export APPLIANCE_OTA__TRUSTED_ROOT="$PWD/$repo/root.json" APPLIANCE_OTA__INTERVAL_S=30
echo "demo: model repository on http://127.0.0.1:$ota_port (publish with: make release-demo)"

# The live view: the camera, the boxes and their prices in a browser (docs/live-view.md). On loopback,
# port 8080 unless something else has it. A fresh token each run lets the page's operator buttons work;
# only its scrypt hash goes to the appliance, and the token rides in the URL after #, which browsers
# never send to a server.
live_port=8080
if (exec 3<>"/dev/tcp/127.0.0.1/$live_port") 2>/dev/null; then
    live_port="$(free_port)"
fi
token="$($PY -c 'import secrets; print(secrets.token_urlsafe(16))')"
APPLIANCE_HTTP__TOKEN_HASH="$(printf '%s' "$token" | $PY -c 'import sys; from device.live.auth import hash_token; print(hash_token(sys.stdin.read()))')"
export APPLIANCE_HTTP__TOKEN_HASH APPLIANCE_HTTP__PORT="$live_port"
echo "demo: live view on http://127.0.0.1:$live_port/#token=$token (open it in a browser)"

args=(--config deploy/demo.toml run --live)
if [ -n "${DURATION:-}" ]; then
    args+=(--duration "$DURATION")
fi
APPLIANCE_MQTT__HOST="$host" APPLIANCE_MQTT__PORT="$port" $PY -m device "${args[@]}"
