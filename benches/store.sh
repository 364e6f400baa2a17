#!/usr/bin/env bash
# Whole-system benchmark of the store backends, all on 127.0.0.1:
#
#   sled        one authgate on the embedded store
#   pg          one authgate on PostgreSQL (a throwaway cluster made here with initdb)
#   pg x3       three authgate instances on that database behind nginx (round robin)
#
# For each: the forward-auth check (GET /auth/validate with a Bearer token: the hot path,
# which must never wait on the database) and sign-ins (POST /auth/login: argon2 plus store
# reads and a session write). Rate limits are off so that the store and the hash are measured.
#
#   bash benches/store.sh
#   WRK_DURATION=30s AUTHGATE_BIN=/abs/path/authgate bash benches/store.sh
#
# Environment (defaults in brackets): WRK_THREADS [2] WRK_CONNECTIONS [64] WRK_DURATION [10s]
# LOGIN_CONNECTIONS [8] BENCH_ROUNDS [3: alternated validate runs per backend, medians
# compared] AUTHGATE_BIN BENCH_RESULTS [<repo>/bench-results]
set -euo pipefail

THREADS=${WRK_THREADS:-2}
CONNS=${WRK_CONNECTIONS:-64}
DURATION=${WRK_DURATION:-10s}
LOGIN_CONNS=${LOGIN_CONNECTIONS:-8}

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=benches/common.sh
source "$repo/benches/common.sh"
results=${BENCH_RESULTS:-$repo/bench-results}

pgbin=$(dirname "$(command -v pg_ctl 2>/dev/null || ls /usr/lib/postgresql/*/bin/pg_ctl 2>/dev/null | sort | tail -1)")
missing=()
for tool in wrk nginx python3 curl; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
[[ -x $pgbin/pg_ctl ]] || missing+=(postgresql)
if ((${#missing[@]})); then
    echo "store.sh: missing: ${missing[*]} (apt-get install wrk nginx python3 curl postgresql)" >&2
    exit 1
fi

if [[ -n ${AUTHGATE_BIN:-} ]]; then
    bin=$AUTHGATE_BIN
else
    (cd "$repo" && cargo build --release --quiet)
    bin=$repo/target/release/authgate
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/authgate-storebench.XXXXXX")
chmod 755 "$tmp"
pids=()
as_pg=()
[[ $(id -u) == 0 ]] && as_pg=(runuser -u postgres --)
cleanup() {
    local pid
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    "${as_pg[@]}" "$pgbin/pg_ctl" -D "$tmp/pg/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

read -r P_PG P_UP P_SLED P_PG1 P_A P_B P_C P_LB < <(python3 - <<'EOF'
import socket
socks = [socket.socket() for _ in range(8)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
EOF
)

# The database: a throwaway cluster, durable settings left at their defaults.
mkdir -p "$tmp/pg"
[[ ${#as_pg[@]} -gt 0 ]] && chown postgres "$tmp/pg"
"${as_pg[@]}" "$pgbin/initdb" -D "$tmp/pg/data" -U authgate --auth=trust -E UTF8 >"$tmp/initdb.log" 2>&1
"${as_pg[@]}" "$pgbin/pg_ctl" -D "$tmp/pg/data" -l "$tmp/pg/log" -w \
    -o "-p $P_PG -k $tmp/pg -c listen_addresses=127.0.0.1 -c max_connections=200" start >/dev/null
URL="postgres://authgate@127.0.0.1:$P_PG/postgres?sslmode=disable"

nginx_common="
    worker_processes 1;
    daemon off;
    events { worker_connections 4096; }
"
cat >"$tmp/upstream.conf" <<EOF
$nginx_common
pid $tmp/upstream.pid;
http {
    access_log off;
    client_body_temp_path $tmp/nginx-body;
    proxy_temp_path $tmp/nginx-proxy;
    server { listen 127.0.0.1:$P_UP; location / { return 200 "hello\n"; } }
}
EOF
cat >"$tmp/lb.conf" <<EOF
$nginx_common
pid $tmp/lb.pid;
http {
    access_log off;
    client_body_temp_path $tmp/nginx-body;
    proxy_temp_path $tmp/nginx-proxy;
    upstream trio {
        server 127.0.0.1:$P_A; server 127.0.0.1:$P_B; server 127.0.0.1:$P_C;
        keepalive 64;
    }
    server {
        listen 127.0.0.1:$P_LB;
        location / {
            proxy_pass http://trio;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
        }
    }
}
EOF

config() { # name port backend [public port]
    # Instances behind one balancer share its public_url: it names the token issuer.
    cat >"$tmp/$1.toml" <<EOF
[server]
listen = "127.0.0.1:$2"
tls = false
public_url = "http://127.0.0.1:${4:-$2}"
[log]
level = "warn"
[store]
backend = "$3"
path = "$tmp/$1/data/authgate.db"
url = "$URL"
pool_size = 16
[mail]
outbox_dir = "$tmp/$1/data/outbox"
[tokens]
keys_dir = "$tmp/$1/data/keys"
access_ttl = "1h"
[rate_limit]
enabled = false
[[routes]]
path_prefix = "/"
upstream = "http://127.0.0.1:$P_UP"
EOF
    mkdir -p "$tmp/$1"
}
config sled "$P_SLED" sled
config pg1 "$P_PG1" postgres
config a "$P_A" postgres "$P_LB"
config b "$P_B" postgres "$P_LB"
config c "$P_C" postgres "$P_LB"

PW="bench-$(python3 -c 'import secrets; print(secrets.token_hex(12))')"
EMAIL=bench@example.com
"$bin" migrate --config "$tmp/pg1.toml" >/dev/null
for name in sled pg1; do
    (cd "$tmp/$name" && echo "$PW" | "$bin" user create --email "$EMAIL" --password-stdin \
        --config "$tmp/$name.toml") >"$tmp/$name-create.log" 2>&1 ||
        { cat "$tmp/$name-create.log" >&2; exit 1; }
done

unset RUST_LOG
start upstream "$P_UP" nginx -p "$tmp" -e "$tmp/upstream.err" -c "$tmp/upstream.conf"

BODY=$(python3 -c 'import json, sys; print(json.dumps({"login": sys.argv[1], "password": sys.argv[2]}))' "$EMAIL" "$PW")
cat >"$tmp/login.lua" <<EOF
wrk.method = "POST"
wrk.body = '$BODY'
wrk.headers["Content-Type"] = "application/json"
EOF
login() { # port -> access token
    curl -sS --max-time 10 "http://127.0.0.1:$1/auth/login" -H 'content-type: application/json' -d "$BODY" |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["data"]["access_token"])'
}

mkdir -p "$results"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
out=$results/store-$stamp.txt
declare -A validate logins token
ROUNDS=${BENCH_ROUNDS:-3}

check() { # label port
    token[$1]=$(login "$2")
    local code
    code=$(curl -sS -o /dev/null -w '%{http_code}' -H "Authorization: Bearer ${token[$1]}" \
        -H "X-Forwarded-Uri: /" -H "X-Forwarded-Host: 127.0.0.1" "http://127.0.0.1:$2/auth/validate")
    [[ $code == 200 ]] || { echo "store.sh: $1 validate answered $code" >&2; exit 1; }
}
validate_run() { # label port -> req/s
    local r
    r=$(wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" -H "Authorization: Bearer ${token[$1]}" \
        -H "X-Forwarded-Uri: /" -H "X-Forwarded-Host: 127.0.0.1" "http://127.0.0.1:$2/auth/validate")
    echo "=== $1 validate" >>"$out"; echo "$r" >>"$out"
    awk '/Requests\/sec/ {print $2}' <<<"$r"
}
login_run() { # label port
    local r
    r=$(wrk -t"$THREADS" -c"$LOGIN_CONNS" -d"$DURATION" -s "$tmp/login.lua" "http://127.0.0.1:$2/auth/login")
    echo "=== $1 login" >>"$out"; echo "$r" >>"$out"
    grep -q "Non-2xx" <<<"$r" && { echo "store.sh: $1 login answered errors:" >&2; echo "$r" >&2; exit 1; }
    logins[$1]=$(awk '/Requests\/sec/ {print $2}' <<<"$r")
}
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# sled and PostgreSQL side by side (an idle gateway costs nothing), validate runs alternated
# so that the VM's drift hits both alike; the medians are compared.
start sled "$P_SLED" "$bin" serve --config "$tmp/sled.toml"
start pg1 "$P_PG1" "$bin" serve --config "$tmp/pg1.toml"
check sled "$P_SLED"
check pg "$P_PG1"
runs_sled=() runs_pg=()
for ((i = 0; i < ROUNDS; i++)); do
    runs_sled+=("$(validate_run sled "$P_SLED")")
    runs_pg+=("$(validate_run pg "$P_PG1")")
done
validate[sled]=$(median "${runs_sled[@]}")
validate[pg]=$(median "${runs_pg[@]}")
login_run sled "$P_SLED"
login_run pg "$P_PG1"
kill "${pids[-1]}" "${pids[-2]}"; wait "${pids[-1]}" "${pids[-2]}" 2>/dev/null || true

start a "$P_A" "$bin" serve --config "$tmp/a.toml"
start b "$P_B" "$bin" serve --config "$tmp/b.toml"
start c "$P_C" "$bin" serve --config "$tmp/c.toml"
start lb "$P_LB" nginx -p "$tmp" -e "$tmp/lb.err" -c "$tmp/lb.conf"
check "pg x3" "$P_LB"
validate["pg x3"]=$(validate_run "pg x3" "$P_LB")
login_run "pg x3" "$P_LB"

{
    echo
    echo "store.sh $stamp: wrk -t$THREADS -c$CONNS -d$DURATION (logins: -c$LOGIN_CONNS), $(nproc) cores shared by everything"
    echo "validate runs, alternated: sled ${runs_sled[*]}; pg ${runs_pg[*]}"
    printf '%-8s %14s %12s\n' setup "validate/s" "logins/s"
    for k in sled pg "pg x3"; do
        printf '%-8s %14s %12s\n' "$k" "${validate[$k]}" "${logins[$k]}"
    done
    echo "validate on PostgreSQL / on sled (medians): $(ratio "${validate[pg]}" "${validate[sled]}") (target >= 0.95)"
} | tee -a "$out"
