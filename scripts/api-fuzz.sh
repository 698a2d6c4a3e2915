#!/usr/bin/env bash
# Runs schemathesis (PyPI) against `steadfast serve`, through the OpenAPI document the server
# serves at /api/v1/openapi.json: every operation, every check (no 5xx, every answer fits the
# document, schema-violating calls refused, schema-valid ones accepted), with the token.
#
#   scripts/api-fuzz.sh              install schemathesis if needed, serve the demo, run it
#   STEADFAST_FUZZ_EXAMPLES=200 scripts/api-fuzz.sh    more examples per operation
#
# The server runs the debug binary (built if needed) on a copy of the demo's runs, on a free
# loopback port, with a fresh token; it is stopped whatever the outcome.
set -euo pipefail
cd "$(dirname "$0")/.."

home="${STEADFAST_TOOLS_HOME:-$HOME/.cache/steadfast}/schemathesis"
version="4.32.5"
examples="${STEADFAST_FUZZ_EXAMPLES:-100}"

validator="0.7.2"
if ! "$home/bin/st" --version 2>/dev/null | grep -q "$version" \
    || ! "$home/bin/python" -c "import openapi_spec_validator" 2>/dev/null; then
    python3 -m venv "$home"
    "$home/bin/python" -m pip install --quiet --disable-pip-version-check \
        "schemathesis==$version" "openapi-spec-validator==$validator"
fi

cargo build --quiet --bin steadfast
work="$(mktemp -d)"
server=""
cleanup() {
    local status=$?
    if [ -n "$server" ]; then
        if ! kill -0 "$server" 2>/dev/null; then
            echo "the server exited during the run:"
            status=1
        fi
        kill -TERM "$server" 2>/dev/null || true
        wait "$server" 2>/dev/null || true
    fi
    if [ "$status" != 0 ]; then
        echo "== the server's log (last 40 lines)"
        tail -n 40 "$work/serve.log"
    fi
    rm -rf "$work"
    exit "$status"
}
trap cleanup EXIT

target/debug/steadfast demo --data "$work/data" >"$work/demo.log" 2>&1
(umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$work/token")
target/debug/steadfast serve --data "$work/data" --bind 127.0.0.1:0 --token-file "$work/token" \
    >"$work/serve.log" 2>&1 &
server=$!
for _ in $(seq 1 300); do
    grep -q "^serving on " "$work/serve.log" && break
    kill -0 "$server" 2>/dev/null || { cat "$work/serve.log"; exit 1; }
    sleep 0.1
done
url="$(sed -n 's/^serving on //p' "$work/serve.log")"
[ -n "$url" ] || { echo "the server did not start:"; cat "$work/serve.log"; exit 1; }
# The document itself, by a validator of the OpenAPI 3.1 specification (what client
# generators check first).
curl -sf "$url/api/v1/openapi.json" -o "$work/openapi.json"
"$home/bin/python" -m openapi_spec_validator "$work/openapi.json"
echo "schemathesis $version against $url ($examples examples per operation)"

"$home/bin/st" --config-file scripts/schemathesis.toml run "$url/api/v1/openapi.json" \
    --url "$url" \
    --header "Authorization: Bearer $(cat "$work/token")" \
    --checks all \
    --max-examples "$examples" \
    --workers 2 \
    --no-color
