#!/usr/bin/env bash
# Install Debian's headless-capable Chromium for the dashboard browser tests.
#
# Idempotent and quiet: does nothing when /usr/bin/chromium exists; otherwise runs
# `apt-get install -y chromium` non-interactively, as root or through sudo when
# sudo works without a password. Exits 0 once chromium is there, 1 when it cannot
# be installed (no root, no apt-get, no network or mirror), saying why on stderr.
#
#   scripts/install_chromium.sh            # used by tests/browser.py
#   CHROMIUM=/opt/chromium/chrome scripts/install_chromium.sh   # another binary
set -euo pipefail

CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"

if [[ -x "$CHROMIUM" ]]; then
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_chromium: no apt-get here; install chromium by hand" >&2
    exit 1
fi

if [[ "$(id -u)" -eq 0 ]]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    as_root=(sudo -n)
else
    echo "install_chromium: need root or password-less sudo to apt-get install chromium" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
log="$(mktemp)"
trap 'rm -f "$log"' EXIT

apt_install() {
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        chromium >>"$log" 2>&1
}

# The package lists may be missing or stale: update once and retry on failure.
if ! apt_install; then
    "${as_root[@]}" apt-get update -q >>"$log" 2>&1 || true
    if ! apt_install; then
        echo "install_chromium: apt-get install chromium failed:" >&2
        tail -n 20 "$log" >&2
        exit 1
    fi
fi

if [[ ! -x "$CHROMIUM" ]]; then
    echo "install_chromium: chromium installed but $CHROMIUM is missing" >&2
    exit 1
fi
