#!/usr/bin/env bash
# Whole-system benchmark of the signed-in paths, all on 127.0.0.1, every request carrying a
# valid `Authorization: Bearer <access token>`:
#
#   1. authenticated route: authgate's built-in proxy on an `access = "authenticated"` route,
#      against nginx proxy_pass (no authentication at all) to the same nginx upstream;
#   2. forward-auth: nginx `auth_request` to authgate's /auth/validate (the README snippet),
#      against the same nginx configuration whose auth_request goes to a stub nginx that
#      always answers 200, so the difference is what authgate's validation costs.
#   3. validate: /auth/validate asked directly (no front), against that stub nginx answering
#      `return 200` with the same number of workers as authgate has serving threads.
#
# Loads each with wrk and writes the raw outputs and a summary table to bench-results/
# (gitignored).
#
#   bash benches/forward_auth.sh                       # build release, run, print the table
#   WRK_DURATION=30s WRK_CONNECTIONS=128 bash benches/forward_auth.sh
#   AUTHGATE_BIN=/path/to/authgate BENCH_QUIET_WAIT=900 bash benches/forward_auth.sh
#
# Environment (defaults in brackets):
#   WRK_THREADS [2]  WRK_CONNECTIONS [64]  WRK_DURATION [15s]  WRK_WARMUP [3s]
#   BENCH_ROUNDS [3]  rounds of all four targets in turn; the table gives medians
#   BENCH_LOGS [off]  on: the front nginx and both authgates log every request to a file, as
#                    deployed (nginx's default access_log, authgate's default [log] level
#                    "info" and access log); off: none of them logs requests
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
[[ $LOGS == on || $LOGS == off ]] || { echo "forward_auth.sh: BENCH_LOGS is on or off, not '$LOGS'" >&2; exit 1; }

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=benches/common.sh
source "$repo/benches/common.sh"
results=${BENCH_RESULTS:-$repo/bench-results}

missing=()
for tool in wrk nginx python3 curl; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if ((${#missing[@]})); then
    echo "forward_auth.sh: missing on PATH: ${missing[*]}" >&2
    echo "  Debian/Ubuntu: sudo apt-get install -y --no-install-recommends wrk nginx python3 curl" >&2
    echo "  (nginx may live in /usr/sbin: add it to PATH if it is installed but not found)" >&2
    exit 1
fi

if [[ -n ${AUTHGATE_BIN:-} ]]; then
    bin=$AUTHGATE_BIN
else
    (cd "$repo" && cargo build --release --quiet)
    bin=$repo/target/release/authgate
fi
[[ -x $bin ]] || { echo "forward_auth.sh: no executable at $bin" >&2; exit 1; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/authgate-fabench.XXXXXX")
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
#   P_UP   upstream (the app)            P_STAT  upstream's stub_status
#   P_STUB forward-auth stub             P_NGX   nginx proxy_pass (no auth)
#   P_FA   nginx auth_request->authgate  P_FS    nginx auth_request->stub
#   P_AG   authgate, authenticated route P_AGV   authgate answering /auth/validate
read -r P_UP P_STAT P_STUB P_NGX P_FA P_FS P_AG P_AGV < <(python3 - <<'EOF'
import socket
socks = [socket.socket() for _ in range(8)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
EOF
)


# Shared by every nginx instance: no logging, and no request caps on keep-alive connections
# (nginx's default keepalive_requests 1000 would make wrk and the proxy reconnect, which
# authgate never does).
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

# The app: a fixed 6-byte answer, and /whoami echoes the identity it was given (sanity check
# that the identity headers really arrive, through authgate and through nginx auth_request).
cat >"$tmp/upstream.conf" <<EOF
$nginx_common
pid $tmp/upstream.pid;
http {
    $nginx_http_common
    server {
        listen 127.0.0.1:$P_UP;
        location = / { default_type text/plain; return 200 "hello\n"; }
        location = /whoami { default_type text/plain; return 200 "\$http_x_auth_user_email\n"; }
    }
    # Connections accepted by the upstream: tells whether a proxy reuses its connections.
    server {
        listen 127.0.0.1:$P_STAT;
        location = /status { stub_status; }
    }
}
EOF

# The forward-auth stub: allows everything, with the same identity headers authgate sends, so
# the front nginx does the same auth_request_set / proxy_set_header work either way.
cat >"$tmp/stub.conf" <<EOF
$nginx_common
pid $tmp/stub.pid;
http {
    $nginx_http_common
    server {
        listen 127.0.0.1:$P_STUB;
        location = /status { stub_status; }
        location / {
            add_header X-Auth-User-Id 00000000-0000-0000-0000-000000000000;
            add_header X-Auth-User-Email bench@example.com;
            add_header X-Auth-User-Name bench@example.com;
            add_header X-Auth-User-Roles customer;
            add_header X-Auth-Session-Id 00000000-0000-0000-0000-000000000000;
            return 200;
        }
    }
}
EOF

# Forwarding headers to the app, matching what authgate sets, so every proxy does the same
# work. nginx inherits proxy_set_header from the enclosing level only when a location sets
# none itself, so each location below spells out all of its own.
fwd_headers='
        proxy_set_header Connection "";
        proxy_set_header Host $host;
        proxy_set_header X-Forwarded-For $remote_addr;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_set_header X-Forwarded-Host $host;
        proxy_set_header X-Real-IP $remote_addr;
        proxy_set_header X-Request-Id $request_id;'

# The README's nginx auth_request snippet (HTTP/1.1 with an empty Connection header toward
# both upstreams, HEAD for the subrequest: nginx keeps an auth_request connection only when
# the answer has no body), with pools of 64 rather than 16 so 64 client connections do not
# churn them. The "auth conns" column shows whether connections were kept.
front_server() { # port auth-upstream auth-path
    cat <<EOF
    server {
        listen 127.0.0.1:$1;
        $front_log
        location = /_auth {
            internal;
            proxy_pass http://$2$3;
            proxy_method HEAD;
            proxy_http_version 1.1;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header Connection "";
            proxy_set_header X-Original-URI \$request_uri;
            proxy_set_header X-Original-Method \$request_method;
            proxy_set_header X-Forwarded-Host \$host;
            proxy_set_header X-Forwarded-Proto \$scheme;
        }
        location / {
            auth_request /_auth;
            auth_request_set \$auth_user_id    \$upstream_http_x_auth_user_id;
            auth_request_set \$auth_user_email \$upstream_http_x_auth_user_email;
            auth_request_set \$auth_user_name  \$upstream_http_x_auth_user_name;
            auth_request_set \$auth_user_roles \$upstream_http_x_auth_user_roles;
            auth_request_set \$auth_session_id \$upstream_http_x_auth_session_id;
            proxy_set_header X-Auth-User-Id    \$auth_user_id;
            proxy_set_header X-Auth-User-Email \$auth_user_email;
            proxy_set_header X-Auth-User-Name  \$auth_user_name;
            proxy_set_header X-Auth-User-Roles \$auth_user_roles;
            proxy_set_header X-Auth-Session-Id \$auth_session_id;
            $fwd_headers
            add_header X-Request-Id \$request_id;
            proxy_pass http://app;
        }
    }
EOF
}

# The front's own request log (a server-level access_log overrides the http-level "off").
front_log=
[[ $LOGS == on ]] && front_log="access_log $tmp/nginx-access.log;"

pool() { # name port
    printf '    upstream %s { server 127.0.0.1:%s; keepalive 64; keepalive_requests 1000000; }\n' "$1" "$2"
}

# One nginx process carries the three fronts (only one is loaded at a time).
cat >"$tmp/front.conf" <<EOF
$nginx_common
pid $tmp/front.pid;
http {
    $nginx_http_common
$(pool app "$P_UP")
$(pool authgate "$P_AGV")
$(pool stub "$P_STUB")
    proxy_http_version 1.1;
    # nginx proxy_pass, no authentication: the reference for authgate's authenticated route
    server {
        listen 127.0.0.1:$P_NGX;
        $front_log
        location / {
            $fwd_headers
            add_header X-Request-Id \$request_id;
            proxy_pass http://app;
        }
    }
$(front_server "$P_FA" authgate /auth/validate)
$(front_server "$P_FS" stub /)
}
EOF

PW="bench-$(python3 -c 'import secrets; print(secrets.token_hex(12))')"
EMAIL=bench@example.com

# ag-route: the built-in proxy. ag-validate: the forward-auth door behind nginx, which it
# trusts (README: tls = false, the proxy in trusted_proxies). Same route in both, so
# /auth/validate applies the rule the built-in proxy does.
for name in ag-route ag-validate; do
    port=$([[ $name == ag-route ]] && echo "$P_AG" || echo "$P_AGV")
    cat >"$tmp/$name.toml" <<EOF
[server]
listen = "127.0.0.1:$port"
tls = false
public_url = "http://127.0.0.1:$port"
$([[ $name == ag-validate ]] && echo 'trusted_proxies = ["127.0.0.1/32"]')

[log]
$(if [[ $LOGS == on ]]; then
    echo 'level = "info"'
    echo "file = \"$tmp/$name-access.log\""
else
    echo 'level = "warn"'
    echo 'access = false'
fi)

[store]
path = "$tmp/$name/data/authgate.db"

[mail]
outbox_dir = "$tmp/$name/data/outbox"

[tokens]
keys_dir = "$tmp/$name/data/keys"
# The one token must outlive the run.
access_ttl = "1h"
refresh_ttl = "1d"
session_ttl = "1d"

[[routes]]
path_prefix = "/"
upstream = "http://127.0.0.1:$P_UP"
access = "authenticated"
EOF
    "$bin" check-config --config "$tmp/$name.toml" >/dev/null
done

# Each process runs in a directory of its own: authgate keeps anything not configured above
# under ./data, and two instances cannot share one store.

# A verified account in each store, made while no gateway holds it (the store is
# single-process), then one sign-in per gateway for an access token.
for name in ag-route ag-validate; do
    mkdir -p "$tmp/$name"
    (cd "$tmp/$name" && echo "$PW" | "$bin" user create --email "$EMAIL" --password-stdin \
        --config "$tmp/$name.toml") >"$tmp/$name-create.log" 2>&1 ||
        { echo "forward_auth.sh: user create failed for $name:" >&2; cat "$tmp/$name-create.log" >&2; exit 1; }
done

login() { # port -> access token on stdout
    curl -sS --max-time 10 "http://127.0.0.1:$1/auth/login" -H 'content-type: application/json' \
        -d "$(python3 -c 'import json, sys; print(json.dumps({"login": sys.argv[1], "password": sys.argv[2]}))' "$EMAIL" "$PW")" |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["data"]["access_token"])'
}

# RUST_LOG would override [log] level and could turn the access log back on.
unset RUST_LOG
# The process whose CPU per request is measured for each target: the proxy (front nginx or
# authgate), or the one answering the auth subrequest (stub nginx or authgate).
declare -A proc
start upstream "$P_UP" nginx -p "$tmp" -e "$tmp/upstream.err" -c "$tmp/upstream.conf"
start stub "$P_STUB" nginx -p "$tmp" -e "$tmp/stub.err" -c "$tmp/stub.conf"
proc[fwd-stub]=${pids[-1]} proc[nginx-200]=${pids[-1]}
start ag-route "$P_AG" "$bin" serve --config "$tmp/ag-route.toml"
proc[authgate-route]=${pids[-1]}
start ag-validate "$P_AGV" "$bin" serve --config "$tmp/ag-validate.toml"
proc[fwd-authgate]=${pids[-1]} proc[validate]=${pids[-1]}
start front "$P_NGX" nginx -p "$tmp" -e "$tmp/front.err" -c "$tmp/front.conf"
proc[nginx-proxy]=${pids[-1]}

declare -A token
token[ag-route]=$(login "$P_AG") || { echo "forward_auth.sh: sign-in to ag-route failed" >&2; exit 1; }
token[ag-validate]=$(login "$P_AGV") || { echo "forward_auth.sh: sign-in to ag-validate failed" >&2; exit 1; }

# validate and nginx-200: /auth/validate asked directly (no front), against the stub nginx
# answering `return 200` with the same worker count (one per core, as authgate's threads).
targets=(nginx-proxy authgate-route fwd-stub fwd-authgate validate nginx-200)
declare -A url=(
    [validate]=http://127.0.0.1:$P_AGV/auth/validate
    [nginx-200]=http://127.0.0.1:$P_STUB/
    [nginx-proxy]=http://127.0.0.1:$P_NGX/
    [authgate-route]=http://127.0.0.1:$P_AG/
    [fwd-stub]=http://127.0.0.1:$P_FS/
    [fwd-authgate]=http://127.0.0.1:$P_FA/
)
# Every target gets a token (the same header bytes for the reference as for authgate); each
# gateway's own token for its own targets.
declare -A auth=(
    [nginx-proxy]="Authorization: Bearer ${token[ag-route]}"
    [authgate-route]="Authorization: Bearer ${token[ag-route]}"
    [fwd-stub]="Authorization: Bearer ${token[ag-validate]}"
    [fwd-authgate]="Authorization: Bearer ${token[ag-validate]}"
    [validate]="Authorization: Bearer ${token[ag-validate]}"
    [nginx-200]="Authorization: Bearer ${token[ag-validate]}"
)
# What nginx's auth_request sends besides the token: the path it asks about.
declare -A extra=(
    [nginx-proxy]="X-Bench: 1" [authgate-route]="X-Bench: 1" [fwd-stub]="X-Bench: 1"
    [fwd-authgate]="X-Bench: 1" [validate]="X-Original-URI: /" [nginx-200]="X-Original-URI: /"
)

# A proxy that answers with an error page would look fast: check every path end to end, that
# the identity arrives, and that the authenticating paths really refuse an anonymous request.
for t in nginx-proxy authgate-route fwd-stub fwd-authgate; do
    body=$(curl -sS --max-time 5 -H "${auth[$t]}" "${url[$t]}")
    [[ $body == hello ]] || { echo "forward_auth.sh: $t answered '$body', not 'hello'" >&2; exit 1; }
done
for t in authgate-route fwd-stub fwd-authgate; do
    who=$(curl -sS --max-time 5 -H "${auth[$t]}" "${url[$t]}whoami")
    [[ $who == "$EMAIL" ]] || { echo "forward_auth.sh: $t passed identity '$who', not '$EMAIL'" >&2; exit 1; }
done
for t in validate nginx-200; do
    code=$(curl -sS --max-time 5 -o /dev/null -w '%{http_code}' -H "${auth[$t]}" -H "${extra[$t]}" "${url[$t]}")
    [[ $code == 200 ]] || { echo "forward_auth.sh: $t answered $code, not 200" >&2; exit 1; }
done
code=$(curl -sS --max-time 5 -o /dev/null -w '%{http_code}' -H "${extra[validate]}" "${url[validate]}")
[[ $code == 401 ]] || { echo "forward_auth.sh: validate answered $code without a token, not 401" >&2; exit 1; }
for t in authgate-route fwd-authgate; do
    code=$(curl -sS --max-time 5 -o /dev/null -w '%{http_code}' "${url[$t]}")
    [[ $code == 401 ]] || { echo "forward_auth.sh: $t answered $code without a token, not 401" >&2; exit 1; }
    code=$(curl -sS --max-time 5 -o /dev/null -w '%{http_code}' -H "${auth[$t]}x" "${url[$t]}")
    [[ $code == 401 ]] || { echo "forward_auth.sh: $t answered $code to a bad token, not 401" >&2; exit 1; }
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
# Connections the authenticating service accepted (the stub's stub_status, authgate's
# /metrics): tells whether nginx keeps its connections to authgate. Both count the asking
# request's own connection.
auth_accepts() { # target
    case $1 in
        fwd-stub) curl -sS "http://127.0.0.1:$P_STUB/status" | awk 'NR == 3 { print $1 }' ;;
        fwd-authgate) curl -sS "http://127.0.0.1:$P_AGV/metrics" |
            awk '!seen && $1 ~ /^authgate_connections(_total)?$/ { print $2; seen = 1 }' ;;
        *) echo 0 ;;
    esac
}


mkdir -p "$results"
declare -A rps p99 cpu errs conns aconns quiet_at runs_rps runs_p99 runs_cpu
for t in "${targets[@]}"; do
    echo "== $t (${url[$t]}): warm-up" >&2
    wrk -t"$THREADS" -c"$CONNS" -d"$WARMUP" -H "${auth[$t]}" -H "${extra[$t]}" "${url[$t]}" >/dev/null
    quiet_at[$t]=yes
    errs[$t]=0
done
# Rounds take the targets in turn, so a slow spell of the machine hits them all alike.
for ((round = 1; round <= ROUNDS; round++)); do
  for t in "${targets[@]}"; do
    before=$(upstream_accepts)
    abefore=$(auth_accepts "$t")
    ticks=$(cpu_ticks "${proc[$t]}")
    wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency -H "${auth[$t]}" -H "${extra[$t]}" "${url[$t]}" \
        >"$results/forward_auth-$t-$round.txt" &
    wrk_pid=$!
    await_wrk "$wrk_pid" "$t"
    wrk_pid=
    ticks=$(($(cpu_ticks "${proc[$t]}") - ticks))
    # minus one: the second status request counts itself
    conns[$t]=$(($(upstream_accepts) - before - 1))
    case $t in
        fwd-*) aconns[$t]=$(awk -v a="$(auth_accepts "$t")" -v b="$abefore" 'BEGIN { print a - b - 1 }') ;;
        *) aconns[$t]=- ;;
    esac
    record_round "$t" "$results/forward_auth-$t-$round.txt" "$round" "$ticks"
  done
done
take_medians "${targets[@]}"

# authgate's own warnings (per-connection ones would show here) go with the figures.
for name in ag-route ag-validate; do cp "$tmp/$name.log" "$results/forward_auth-$name.log"; done

row() { # label target reference goal
    echo "| $1 | $(ratio "${rps[$2]}" "${rps[$3]}") | $(paired "${runs_rps[$2]}" "${runs_rps[$3]}") | $4 |" \
        "$(ratio "${p99[$2]}" "${p99[$3]}") (${p99[$2]} / ${p99[$3]}) |" \
        "$(ratio "${cpu[$3]}" "${cpu[$2]}") (${cpu[$3]} / ${cpu[$2]}) |"
}
{
    echo "# authgate on signed-in requests: authenticated route and forward-auth"
    echo
    echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ), repo at $(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo '?')$([[ -n ${AUTHGATE_BIN:-} ]] && echo ' (authgate prebuilt, not necessarily from it)')"
    echo "- machine: $(nproc) cores, $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)"
    echo "- $(nginx -v 2>&1), $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2), authgate $bin"
    echo "- $ROUNDS rounds of the six targets in turn; req/s and p99 are medians over the rounds (each round's figures: forward_auth-<target>-<round>.txt); conns are the last round's, errors the sum"
    echo "- request logs: $LOGS$([[ $LOGS == on ]] && echo ' (nginx fronts: access_log to a file, combined format; authgate: [log] level "info", access log to a file)')"
    echo "- wrk -t$THREADS -c$CONNS -d$DURATION --latency (warm-up $WARMUP), GET / of a 6-byte body, plain HTTP, a valid \`Authorization: Bearer\` access token (EdDSA) on every request; everything shares the same cores"
    echo "- nginx-proxy: nginx proxy_pass to the upstream, no authentication; authgate-route: authgate's proxy on an \`access = \"authenticated\"\` route"
    echo "- validate: authgate /auth/validate asked directly with the token and X-Original-URI; nginx-200: the stub nginx (worker_processes auto: one per core) answering return 200 to the same request"
    echo "- fwd-*: nginx auth_request (README snippet, keep-alive to both upstreams) then proxy_pass; the auth subrequest goes to a stub nginx answering 200 (fwd-stub) or to authgate /auth/validate (fwd-authgate)"
    echo "- upstream conns = connections the upstream accepted during the measured run; auth conns = connections the stub / authgate accepted (keep-alive reuse checks)"
    echo "- quiet machine = no rustc/cargo process seen during the measured run"
    echo "- CPU/request = user + system CPU time during the run, over the requests wrk counted, median of the rounds, of: the proxy (nginx-proxy: the front nginx; authgate-route: authgate), or what answers the auth subrequest (fwd-stub: the stub nginx; fwd-authgate: authgate)"
    echo
    echo "| target | req/s | p99 (ms) | CPU/request (us) | errors | upstream conns | auth conns | quiet machine |"
    echo "|---|---:|---:|---:|---:|---:|---:|---|"
    for t in "${targets[@]}"; do
        echo "| $t | ${rps[$t]} | ${p99[$t]} | ${cpu[$t]} | ${errs[$t]} | ${conns[$t]} | ${aconns[$t]} | ${quiet_at[$t]} |"
    done
    echo
    echo "| comparison | req/s ratio | per-round ratio, median (range) | target | p99 ratio (ms / ms) | CPU/request ratio (reference us / authgate us) |"
    echo "|---|---:|---:|---:|---:|---:|"
    row "authgate-route / nginx-proxy" authgate-route nginx-proxy "≥ 1.00"
    row "fwd-authgate / fwd-stub" fwd-authgate fwd-stub "≥ 0.95"
    row "validate / nginx-200" validate nginx-200 "≥ 0.80"
} | tee "$results/forward_auth-logs-$LOGS.md"
