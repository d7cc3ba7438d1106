#!/usr/bin/env bash
# Builds share_guard.so, the broker plugin that keeps devices out of shared subscriptions and limits how
# fast each may publish (deploy/mosquitto/share_guard.c, docs/broker.md). Run it on the broker host: the
# plugin is built against that host's mosquitto headers and architecture.
#
#   deploy/mosquitto/build-share-guard.sh [OUT]      OUT defaults to ./share_guard.so
#
# Needs a C compiler and mosquitto's plugin headers: apt-get install gcc mosquitto-dev
set -euo pipefail

source_file="$(dirname "$0")/share_guard.c"
out=${1:-share_guard.so}
cc=${CC:-cc}

command -v "$cc" >/dev/null || { echo "share_guard: no C compiler ($cc); apt-get install gcc" >&2; exit 69; }
if ! printf '#include <mosquitto_broker.h>\n#include <mosquitto_plugin.h>\n' | "$cc" -E -x c - >/dev/null 2>&1; then
    echo "share_guard: mosquitto's plugin headers are missing; apt-get install mosquitto-dev" >&2
    exit 69
fi
# Built beside OUT and renamed, so a failed build never leaves a half-written plugin where mosquitto
# loads it from.
tmp=$(mktemp "$out.XXXXXX")
trap 'rm -f "$tmp"' EXIT
"$cc" -shared -fPIC -O2 -Wall -Wextra -o "$tmp" "$source_file" -lm
chmod 0644 "$tmp"
mv -f "$tmp" "$out"
echo "share_guard: built $out"
