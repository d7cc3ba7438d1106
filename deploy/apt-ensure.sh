#!/usr/bin/env bash
# Installs Debian packages only when the command they provide is missing.
# Usage: deploy/apt-ensure.sh COMMAND:PACKAGE [COMMAND:PACKAGE ...]
# Used by `make` (build and test tools) and by provisioning; runs apt-get through sudo when not root.
set -euo pipefail

missing=()
for pair in "$@"; do
    command_name="${pair%%:*}"
    package="${pair#*:}"
    if ! command -v "$command_name" >/dev/null 2>&1; then
        missing+=("$package")
    fi
done
[ "${#missing[@]}" -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ]; then
    sudo=()
elif command -v sudo >/dev/null 2>&1; then
    sudo=(sudo)
else
    echo "apt-ensure: need root or sudo to install: ${missing[*]}" >&2
    exit 1
fi
echo "apt-ensure: installing ${missing[*]}" >&2
"${sudo[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
