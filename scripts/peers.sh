#!/usr/bin/env bash
# Installs the real peers the adapter tests talk to. Without them those tests say SKIPPED
# (unless STEADFAST_REQUIRE_PEERS=1, as in CI, where they fail).
#
#   scripts/peers.sh smtp    Debian's aiosmtpd (the tests start it themselves on a free port)
#   scripts/peers.sh llm     llama.cpp's server with Gemma 3 270M on 127.0.0.1:8088
#   scripts/peers.sh promtool  Prometheus' promtool (Debian's `prometheus`, no daemon started),
#                            which checks what `/metrics` serves
#   scripts/peers.sh browser Debian's chromium and chromium-driver (the same version), for the
#                            dashboard's browser tests
#   scripts/peers.sh         all of them
set -euo pipefail
cd "$(dirname "$0")/.."

smtp() {
    if /usr/bin/python3 -c 'import aiosmtpd' 2>/dev/null; then
        return 0
    fi
    local sudo=""
    if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
    $sudo apt-get install -y -q python3-aiosmtpd >/dev/null 2>&1 \
        || { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q python3-aiosmtpd >/dev/null; }
    /usr/bin/python3 -c 'import aiosmtpd'
}

need_promtool() {
    if [ -x /usr/bin/promtool ] || command -v promtool >/dev/null 2>&1; then
        return 0
    fi
    local sudo=""
    if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
    $sudo apt-get install -y -q --no-install-recommends prometheus >/dev/null 2>&1 \
        || { $sudo apt-get update -q >/dev/null \
            && $sudo apt-get install -y -q --no-install-recommends prometheus >/dev/null; }
    command promtool --version >/dev/null
}

browser() {
    if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ] \
        && [ "$(/usr/bin/chromium --version 2>/dev/null | grep -o '[0-9.]*' | head -1)" \
            = "$(/usr/bin/chromedriver --version | grep -o '[0-9.]*' | head -1)" ]; then
        return 0
    fi
    local sudo=""
    if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
    # One transaction, so the driver is the browser's exact version.
    $sudo apt-get install -y -q --no-install-recommends chromium chromium-driver >/dev/null 2>&1 \
        || { $sudo apt-get update -q >/dev/null \
            && $sudo apt-get install -y -q --no-install-recommends chromium chromium-driver >/dev/null; }
    /usr/bin/chromium --version 2>/dev/null && /usr/bin/chromedriver --version
}

case "${1:-all}" in
    smtp) smtp ;;
    llm) scripts/llm-server.sh ;;
    promtool) need_promtool ;;
    browser) browser ;;
    all) smtp; need_promtool; browser; scripts/llm-server.sh ;;
    *) echo "usage: $0 [smtp|llm|promtool|browser|all]" >&2; exit 2 ;;
esac
