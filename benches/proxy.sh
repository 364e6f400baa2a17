#!/usr/bin/env bash
# Whole-system proxy benchmark: authgate against nginx as a reverse proxy, plain and TLS,
# both in front of the same nginx upstream, all on 127.0.0.1. Loads each with wrk and
# writes the raw outputs and a summary table to bench-results/ (gitignored).
#
#   bash benches/proxy.sh                      # build release, run, print the table
#   WRK_DURATION=30s WRK_CONNECTIONS=128 bash benches/proxy.sh
#   AUTHGATE_BIN=/path/to/authgate BENCH_QUIET_WAIT=900 bash benches/proxy.sh
#
# Environment (defaults in brackets):
#   WRK_THREADS [2]  WRK_CONNECTIONS [64]  WRK_DURATION [15s]  WRK_WARMUP [3s]
#   BENCH_ROUNDS [3]  rounds of all targets in turn; the table gives medians
#   BENCH_LOGS [off]  on: both proxies log every request to a file, as deployed (nginx's
#                    default access_log, authgate's default [log] level "info" and access
#                    log); off: neither logs requests
#   AUTHGATE_BIN     use this binary instead of `cargo build --release`
#   BENCH_QUIET_WAIT seconds to wait for other rustc/cargo processes to finish before
#                    measuring [0]; whether the machine was quiet is recorded either way
#   BENCH_RESULTS    results directory [<repo>/bench-results]
set -euo pipefail

THREADS=${WRK_THREADS:-2}
CONNS=${WRK_CONNECTIONS:-64}
DURATION=${WRK_DURATION:-15s}
WARMUP=${WRK_WARMUP:-3s}
QUIET_WAIT=${BENCH_QUIET_WAIT:-0}
ROUNDS=${BENCH_ROUNDS:-3}
LOGS=${BENCH_LOGS:-off}
[[ $LOGS == on || $LOGS == off ]] || { echo "proxy.sh: BENCH_LOGS is on or off, not '$LOGS'" >&2; exit 1; }

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=benches/common.sh
source "$repo/benches/common.sh"
results=${BENCH_RESULTS:-$repo/bench-results}

missing=()
for tool in wrk nginx openssl python3 curl; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if ((${#missing[@]})); then
    echo "proxy.sh: missing on PATH: ${missing[*]}" >&2
    echo "  Debian/Ubuntu: sudo apt-get install -y --no-install-recommends wrk nginx openssl python3 curl" >&2
    echo "  (nginx may live in /usr/sbin: add it to PATH if it is installed but not found)" >&2
    exit 1
fi

if [[ -n ${AUTHGATE_BIN:-} ]]; then
    bin=$AUTHGATE_BIN
else
    (cd "$repo" && cargo build --release --quiet)
    bin=$repo/target/release/authgate
fi
[[ -x $bin ]] || { echo "proxy.sh: no executable at $bin" >&2; exit 1; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/authgate-bench.XXXXXX")
# nginx workers drop to an unprivileged user when started as root; they must reach the prefix.
chmod 755 "$tmp"
pids=()
wrk_pid=
cleanup() {
    local pid
    [[ -n $wrk_pid ]] && kill "$wrk_pid" 2>/dev/null || true
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# nginx cannot be told to bind port 0 and report it, so ask the OS for free ports up front.
read -r P_UP P_STAT P_NGX P_NGXS P_AG P_AGS < <(python3 - <<'EOF'
import socket
socks = [socket.socket() for _ in range(6)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
EOF
)


# An EC key keeps the (few) handshakes cheap; both servers use the same certificate.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 7 \
    -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -keyout "$tmp/key.pem" -out "$tmp/cert.pem" 2>/dev/null

# Shared by both nginx instances: no logging (the proxy's own is set below), and no request
# caps on keep-alive connections (nginx's default keepalive_requests 1000 would make wrk and
# the proxy reconnect, which authgate never does).
nginx_common="
    worker_processes auto;
    daemon off;
    worker_rlimit_nofile 65536;
    events { worker_connections 8192; }
"
nginx_http_common="
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    client_body_temp_path $tmp/nginx-body;
    proxy_temp_path $tmp/nginx-proxy;
    fastcgi_temp_path $tmp/nginx-fastcgi;
    uwsgi_temp_path $tmp/nginx-uwsgi;
    scgi_temp_path $tmp/nginx-scgi;
"

cat >"$tmp/upstream.conf" <<EOF
$nginx_common
pid $tmp/upstream.pid;
http {
    $nginx_http_common
    server {
        listen 127.0.0.1:$P_UP;
        location = / { default_type text/plain; return 200 "hello\n"; }
    }
    # Connections accepted by the upstream: tells whether a proxy reuses its connections.
    server {
        listen 127.0.0.1:$P_STAT;
        location = /status { stub_status; }
    }
}
EOF

# The proxy's own request log (a server-level access_log overrides the http-level "off").
proxy_log=
[[ $LOGS == on ]] && proxy_log="access_log $tmp/nginx-access.log;"

# The forwarding headers match what authgate sets, so both proxies do the same work.
cat >"$tmp/proxy.conf" <<EOF
$nginx_common
pid $tmp/proxy.pid;
http {
    $nginx_http_common
    upstream app {
        server 127.0.0.1:$P_UP;
        keepalive 64;
        keepalive_requests 1000000;
    }
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_set_header Host \$host;
    proxy_set_header X-Forwarded-For \$remote_addr;
    proxy_set_header X-Forwarded-Proto \$scheme;
    proxy_set_header X-Forwarded-Host \$host;
    proxy_set_header X-Real-IP \$remote_addr;
    proxy_set_header X-Request-Id \$request_id;
    add_header X-Request-Id \$request_id;
    server {
        listen 127.0.0.1:$P_NGX;
        $proxy_log
        location / { proxy_pass http://app; }
    }
    server {
        listen 127.0.0.1:$P_NGXS ssl;
        ssl_certificate $tmp/cert.pem;
        ssl_certificate_key $tmp/key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;
        $proxy_log
        location / { proxy_pass http://app; }
    }
}
EOF

for tls in false true; do
    name=authgate-$([[ $tls == true ]] && echo tls || echo plain)
    port=$([[ $tls == true ]] && echo "$P_AGS" || echo "$P_AG")
    scheme=$([[ $tls == true ]] && echo https || echo http)
    {
        echo "[server]"
        echo "listen = \"127.0.0.1:$port\""
        echo "tls = $tls"
        [[ $tls == true ]] && printf 'tls_cert = "%s"\ntls_key = "%s"\n' "$tmp/cert.pem" "$tmp/key.pem"
        echo "public_url = \"$scheme://127.0.0.1:$port\""
        echo
        echo "[log]"
        if [[ $LOGS == on ]]; then
            echo 'level = "info"'
            echo "file = \"$tmp/$name-access.log\""
        else
            echo 'level = "warn"'
            echo 'access = false'
        fi
        echo
        echo "[[routes]]"
        echo 'path_prefix = "/"'
        echo "upstream = \"http://127.0.0.1:$P_UP\""
        echo 'access = "public"'
    } >"$tmp/$name.toml"
    "$bin" check-config --config "$tmp/$name.toml" >/dev/null
done

# Each process runs in a directory of its own: authgate keeps its store, keys and outbox
# under ./data by default, and two instances cannot share one store.
# RUST_LOG would override [log] level and could turn the access log back on.
unset RUST_LOG
# The process serving each target, whose CPU per request is measured.
declare -A proc
start upstream "$P_UP" nginx -p "$tmp" -e "$tmp/upstream.err" -c "$tmp/upstream.conf"
proc[upstream]=${pids[-1]}
start nginx "$P_NGX" nginx -p "$tmp" -e "$tmp/proxy.err" -c "$tmp/proxy.conf"
proc[nginx-plain]=${pids[-1]} proc[nginx-tls]=${pids[-1]}
start authgate-plain "$P_AG" "$bin" serve --config "$tmp/authgate-plain.toml"
proc[authgate-plain]=${pids[-1]}
start authgate-tls "$P_AGS" "$bin" serve --config "$tmp/authgate-tls.toml"
proc[authgate-tls]=${pids[-1]}

targets=(upstream nginx-plain authgate-plain nginx-tls authgate-tls)
declare -A url=(
    [upstream]=http://127.0.0.1:$P_UP/
    [nginx-plain]=http://127.0.0.1:$P_NGX/
    [authgate-plain]=http://127.0.0.1:$P_AG/
    [nginx-tls]=https://127.0.0.1:$P_NGXS/
    [authgate-tls]=https://127.0.0.1:$P_AGS/
)
# A proxy that answers with an error page would look fast: check every path end to end.
for t in "${targets[@]}"; do
    body=$(curl -ksS --max-time 5 "${url[$t]}")
    [[ $body == hello ]] || { echo "proxy.sh: $t answered '$body', not 'hello'" >&2; exit 1; }
done

if ((QUIET_WAIT > 0)); then
    waited=0
    while others_compiling && ((waited < QUIET_WAIT)); do
        sleep 10
        waited=$((waited + 10))
    done
fi

upstream_accepts() {
    curl -sS "http://127.0.0.1:$P_STAT/status" | awk 'NR == 3 { print $1 }'
}


mkdir -p "$results"
declare -A rps p99 cpu errs conns quiet_at runs_rps runs_p99 runs_cpu
for t in "${targets[@]}"; do
    echo "== $t (${url[$t]}): warm-up" >&2
    wrk -t"$THREADS" -c"$CONNS" -d"$WARMUP" "${url[$t]}" >/dev/null
    quiet_at[$t]=yes
    errs[$t]=0
done
# Rounds take the targets in turn, so a slow spell of the machine hits them all alike.
for ((round = 1; round <= ROUNDS; round++)); do
  for t in "${targets[@]}"; do
    before=$(upstream_accepts)
    ticks=$(cpu_ticks "${proc[$t]}")
    wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency "${url[$t]}" >"$results/proxy-$t-$round.txt" &
    wrk_pid=$!
    await_wrk "$wrk_pid" "$t"
    wrk_pid=
    ticks=$(($(cpu_ticks "${proc[$t]}") - ticks))
    # minus one: the second status request counts itself
    conns[$t]=$(($(upstream_accepts) - before - 1))
    record_round "$t" "$results/proxy-$t-$round.txt" "$round" "$ticks"
  done
done
take_medians "${targets[@]}"

# authgate's own warnings (per-connection ones would show here) go with the figures.
for name in authgate-plain authgate-tls; do cp "$tmp/$name.log" "$results/proxy-$name.log"; done

{
    echo "# authgate vs nginx reverse proxy"
    echo
    echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ), repo at $(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo '?')$([[ -n ${AUTHGATE_BIN:-} ]] && echo ' (authgate prebuilt, not necessarily from it)')"
    echo "- machine: $(nproc) cores, $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)"
    echo "- $(nginx -v 2>&1), $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2), authgate $bin"
    echo "- $ROUNDS rounds of all targets in turn; req/s and p99 are medians over the rounds (each round's figures: proxy-<target>-<round>.txt); conns are the last round's, errors the sum"
    echo "- request logs: $LOGS$([[ $LOGS == on ]] && echo ' (nginx: access_log to a file, combined format; authgate: [log] level "info", access log to a file)')"
    echo "- wrk -t$THREADS -c$CONNS -d$DURATION --latency (warm-up $WARMUP), GET / of a 6-byte body; everything shares the same cores"
    echo "- upstream conns = connections the upstream accepted during the measured run (keep-alive reuse check)"
    echo "- quiet machine = no rustc/cargo process seen during the measured run"
    echo "- CPU/request = user + system CPU time of the serving process (nginx: master and workers) during the run, over the requests wrk counted; median of the rounds"
    echo
    echo "| target | req/s | p99 (ms) | CPU/request (us) | errors | upstream conns | quiet machine |"
    echo "|---|---:|---:|---:|---:|---:|---|"
    for t in "${targets[@]}"; do
        echo "| $t | ${rps[$t]} | ${p99[$t]} | ${cpu[$t]} | ${errs[$t]} | ${conns[$t]} | ${quiet_at[$t]} |"
    done
    echo
    echo "| authgate / nginx | req/s ratio | per-round ratio, median (range) | p99 ratio (authgate ms / nginx ms) | CPU/request ratio (nginx us / authgate us) |"
    echo "|---|---:|---:|---:|---:|"
    for mode in plain tls; do
        echo "| $mode | $(ratio "${rps[authgate-$mode]}" "${rps[nginx-$mode]}") |" \
            "$(paired "${runs_rps[authgate-$mode]}" "${runs_rps[nginx-$mode]}") |" \
            "$(ratio "${p99[authgate-$mode]}" "${p99[nginx-$mode]}") (${p99[authgate-$mode]} / ${p99[nginx-$mode]}) |" \
            "$(ratio "${cpu[nginx-$mode]}" "${cpu[authgate-$mode]}") (${cpu[nginx-$mode]} / ${cpu[authgate-$mode]}) |"
    done
} | tee "$results/proxy-logs-$LOGS.md"
