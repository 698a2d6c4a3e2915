#!/usr/bin/env bash
# Installs the real peers the adapter tests talk to. Without them those tests say SKIPPED
# (unless STEADFAST_REQUIRE_PEERS=1, as in CI, where they fail).
#
#   scripts/peers.sh smtp    Debian's aiosmtpd (the tests start it themselves on a free port)
#   scripts/peers.sh llm     llama.cpp's server with Gemma 3 270M on 127.0.0.1:8088
#   scripts/peers.sh         both
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

case "${1:-all}" in
    smtp) smtp ;;
    llm) scripts/llm-server.sh ;;
    all) smtp; scripts/llm-server.sh ;;
    *) echo "usage: $0 [smtp|llm|all]" >&2; exit 2 ;;
esac
