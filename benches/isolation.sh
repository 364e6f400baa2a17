#!/usr/bin/env bash
# Isolation benchmark: can a flood of wrong-password sign-ins slow the proxy down?
#
# authgate verifies passwords (argon2id, tens of milliseconds each) on threads of its own at
# SCHED_IDLE ([passwords] priority = "idle", workers = cores, max_queue = 8 per worker,
# max_wait = 500ms; past them 503 SERVICE_BUSY), off the request threads, and holds the account endpoints' refusals (429, 503)
# for [rate_limit] refusal_delay = 1s. This measures proxied GET / throughput and p99 through
# authgate alone, then again while a second wrk floods POST /auth/login with a wrong password
# at full concurrency, and counts how the flood was answered (the target: 401/429/503 only,
# never a timeout or another 5xx; a 403 USER_BLOCKED is the account lockout, see the notes in
# the table). Rounds alternate alone/flood per variant; the table gives medians.
#
# Two gateways, the same public route to the same nginx upstream, one variant each:
#   open:    [rate_limit] enabled = false, so every flood request reaches the hashing pool;
#   limited: the default rate limits, so the flood should mostly get 429.
# Each variant: warm-up, proxy alone, proxy during the flood (the flood starts just before the
# proxy measurement and ends just after it). Raw outputs and a table go to bench-results/
# (gitignored).
#
#   bash benches/isolation.sh                      # build release, run, print the table
#   WRK_DURATION=30s bash benches/isolation.sh
#   AUTHGATE_BIN=/path/to/authgate BENCH_QUIET_WAIT=900 bash benches/isolation.sh
#
# Environment (defaults in brackets):
#   WRK_THREADS [1]  WRK_CONNECTIONS [32]     the proxied load
#   FLOOD_THREADS [1]  FLOOD_CONNECTIONS [64] the sign-in flood (more than the queue holds on
#                                             2 cores, so some are answered 503)
#   FLOOD_TIMEOUT [2s]   wrk --timeout of the flood: a sign-in slower than this is a timeout
#   WRK_DURATION [15s]  WRK_WARMUP [3s]  BENCH_ROUNDS [3]
#   AUTHGATE_BIN     use this binary instead of `cargo build --release`
#   BENCH_QUIET_WAIT seconds to wait for other rustc/cargo processes to finish before
#                    measuring [0]; whether the machine was quiet is recorded either way
#   BENCH_RESULTS    results directory [<repo>/bench-results]
set -euo pipefail

THREADS=${WRK_THREADS:-1}
CONNS=${WRK_CONNECTIONS:-32}
FTHREADS=${FLOOD_THREADS:-1}
FCONNS=${FLOOD_CONNECTIONS:-64}
FTIMEOUT=${FLOOD_TIMEOUT:-2s}
DURATION=${WRK_DURATION:-15s}
WARMUP=${WRK_WARMUP:-3s}
QUIET_WAIT=${BENCH_QUIET_WAIT:-0}
ROUNDS=${BENCH_ROUNDS:-3}

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=benches/common.sh
source "$repo/benches/common.sh"
results=${BENCH_RESULTS:-$repo/bench-results}

missing=()
for tool in wrk nginx python3 curl; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if ((${#missing[@]})); then
    echo "isolation.sh: missing on PATH: ${missing[*]}" >&2
    echo "  Debian/Ubuntu: sudo apt-get install -y --no-install-recommends wrk nginx python3 curl" >&2
    echo "  (nginx may live in /usr/sbin: add it to PATH if it is installed but not found)" >&2
    exit 1
fi

# wrk durations: "15s", "2m", "1h" or a bare number of seconds.
to_secs() {
    awk -v v="$1" 'BEGIN {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        f = (u == "" || u == "s") ? 1 : (u == "m") ? 60 : (u == "h") ? 3600 : -1
        if (f < 0 || n <= 0) { print "bad"; exit }
        printf "%d", n * f
    }'
}
DUR_S=$(to_secs "$DURATION")
[[ $DUR_S != bad ]] || { echo "isolation.sh: WRK_DURATION '$DURATION' is not a duration" >&2; exit 1; }
# The flood starts LEAD seconds before the proxy measurement and stops LEAD seconds after it.
LEAD=1
FLOOD_S=$((DUR_S + 2 * LEAD))

if [[ -n ${AUTHGATE_BIN:-} ]]; then
    bin=$AUTHGATE_BIN
else
    (cd "$repo" && cargo build --release --quiet)
    bin=$repo/target/release/authgate
fi
[[ -x $bin ]] || { echo "isolation.sh: no executable at $bin" >&2; exit 1; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/authgate-isobench.XXXXXX")
# nginx workers drop to an unprivileged user when started as root; they must reach the prefix.
chmod 755 "$tmp"
pids=()
wrk_pid=
flood_pid=
cleanup() {
    local pid
    [[ -n $wrk_pid ]] && kill "$wrk_pid" 2>/dev/null || true
    [[ -n $flood_pid ]] && kill "$flood_pid" 2>/dev/null || true
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# nginx cannot be told to bind port 0 and report it, so ask the OS for free ports up front.
#   P_UP upstream   P_OPEN authgate without rate limits   P_LIM authgate with the defaults
read -r P_UP P_OPEN P_LIM < <(python3 - <<'EOF'
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
EOF
)


# The app: a fixed 6-byte answer; no logging, no request cap on keep-alive connections.
cat >"$tmp/upstream.conf" <<EOF
worker_processes auto;
daemon off;
worker_rlimit_nofile 65536;
events { worker_connections 8192; }
pid $tmp/upstream.pid;
http {
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    client_body_temp_path $tmp/nginx-body;
    proxy_temp_path $tmp/nginx-proxy;
    fastcgi_temp_path $tmp/nginx-fastcgi;
    uwsgi_temp_path $tmp/nginx-uwsgi;
    scgi_temp_path $tmp/nginx-scgi;
    server {
        listen 127.0.0.1:$P_UP;
        location = / { default_type text/plain; return 200 "hello\n"; }
    }
}
EOF

PW="bench-$(python3 -c 'import secrets; print(secrets.token_hex(12))')"
EMAIL=flood@example.com
WRONG="wrong password here"

variants=(open limited)
declare -A port=([open]=$P_OPEN [limited]=$P_LIM)
for v in "${variants[@]}"; do
    cat >"$tmp/ag-$v.toml" <<EOF
[server]
listen = "127.0.0.1:${port[$v]}"
tls = false
public_url = "http://127.0.0.1:${port[$v]}"

[log]
level = "warn"

[store]
path = "$tmp/ag-$v/data/authgate.db"

[mail]
outbox_dir = "$tmp/ag-$v/data/outbox"

[tokens]
keys_dir = "$tmp/ag-$v/data/keys"

$([[ $v == open ]] && printf '[rate_limit]\n# The flood must reach the hashing pool, not be refused by the sign-in limits.\nenabled = false\n')

[[routes]]
path_prefix = "/"
upstream = "http://127.0.0.1:$P_UP"
access = "public"
EOF
    "$bin" check-config --config "$tmp/ag-$v.toml" >/dev/null
done

# Each process runs in a directory of its own: authgate keeps anything not configured above
# under ./data, and two instances cannot share one store.

# A verified account in each store, made while no gateway holds it (the store is
# single-process).
for v in "${variants[@]}"; do
    mkdir -p "$tmp/ag-$v"
    (cd "$tmp/ag-$v" && echo "$PW" | "$bin" user create --email "$EMAIL" --password-stdin \
        --config "$tmp/ag-$v.toml") >"$tmp/ag-$v-create.log" 2>&1 ||
        { echo "isolation.sh: user create failed for $v:" >&2; cat "$tmp/ag-$v-create.log" >&2; exit 1; }
done

# RUST_LOG would override [log] level and could turn the access log back on.
unset RUST_LOG
start upstream "$P_UP" nginx -p "$tmp" -e "$tmp/upstream.err" -c "$tmp/upstream.conf"
for v in "${variants[@]}"; do
    start "ag-$v" "${port[$v]}" "$bin" serve --config "$tmp/ag-$v.toml"
done

login_body() { # password
    python3 -c 'import json, sys; print(json.dumps({"login": sys.argv[1], "password": sys.argv[2]}, separators=(",", ":")))' "$EMAIL" "$1"
}
login_code() { # port password -> HTTP status
    curl -sS --max-time 10 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$1/auth/login" \
        -H 'content-type: application/json' -d "$(login_body "$2")"
}

# A gateway answering with an error page would look fast, and a flood answered 400 would never
# hash: check the proxied path end to end, that the account signs in with its password, and
# that the flood's request is the wrong-password 401.
for v in "${variants[@]}"; do
    body=$(curl -sS --max-time 5 "http://127.0.0.1:${port[$v]}/")
    [[ $body == hello ]] || { echo "isolation.sh: ag-$v answered '$body', not 'hello'" >&2; exit 1; }
    code=$(login_code "${port[$v]}" "$PW")
    [[ $code == 200 ]] || { echo "isolation.sh: ag-$v: sign-in with the right password got $code, not 200" >&2; exit 1; }
    code=$(login_code "${port[$v]}" "$WRONG")
    [[ $code == 401 ]] || { echo "isolation.sh: ag-$v: sign-in with a wrong password got $code, not 401" >&2; exit 1; }
done

# The flood: wrk's Lua hooks count the answers by status in each thread; done() adds them up
# (setup() keeps the threads) and prints them with wrk's own error counts.
cat >"$tmp/flood.lua" <<EOF
wrk.method = "POST"
wrk.body = '$(login_body "$WRONG")'
wrk.headers["Content-Type"] = "application/json"

local threads = {}
function setup(thread)
    table.insert(threads, thread)
end

function init(args)
    s401, s403, s429, s503, s5xx, sother = 0, 0, 0, 0, 0, 0
end

function response(status, headers, body)
    if status == 401 then s401 = s401 + 1
    elseif status == 403 then s403 = s403 + 1
    elseif status == 429 then s429 = s429 + 1
    elseif status == 503 then s503 = s503 + 1
    elseif status >= 500 then s5xx = s5xx + 1
    else sother = sother + 1 end
end

function done(summary, latency, requests)
    local n = { s401 = 0, s403 = 0, s429 = 0, s503 = 0, s5xx = 0, sother = 0 }
    for _, t in ipairs(threads) do
        for k, _ in pairs(n) do n[k] = n[k] + (t:get(k) or 0) end
    end
    local e = summary.errors
    io.write(string.format("FLOOD s401=%d s403=%d s429=%d s503=%d s5xx=%d sother=%d " ..
        "connect=%d read=%d write=%d timeout=%d requests=%d duration_us=%d\n",
        n.s401, n.s403, n.s429, n.s503, n.s5xx, n.sother,
        e.connect, e.read, e.write, e.timeout, summary.requests, summary.duration))
end
EOF

# Another benchmark's wrk shares the cores too: any wrk that is not ours.
others_busy() {
    others_compiling && { echo "rustc/cargo"; return 0; }
    local p
    for p in $(pgrep -x wrk || true); do
        [[ $p == "$wrk_pid" || $p == "$flood_pid" ]] || { echo "another wrk"; return 0; }
    done
    return 1
}
if ((QUIET_WAIT > 0)); then
    waited=0
    while others_busy >/dev/null && ((waited < QUIET_WAIT)); do
        sleep 10
        waited=$((waited + 10))
    done
fi

# Runs the proxied load (and the flood when asked) and waits; notes whether the machine was
# shared with a compiler or another benchmark meanwhile.
measure() { # variant phase(alone|flood) round
    local v=$1 phase=$2 r=$3 url="http://127.0.0.1:${port[$1]}/" busy
    local out=$results/isolation-$v-$phase-proxy-$r.txt
    if [[ $phase == flood ]]; then
        wrk -t"$FTHREADS" -c"$FCONNS" -d"${FLOOD_S}s" --timeout "$FTIMEOUT" --latency \
            -s "$tmp/flood.lua" "http://127.0.0.1:${port[$v]}/auth/login" \
            >"$results/isolation-$v-flood-login-$r.txt" &
        flood_pid=$!
        sleep "$LEAD"
    fi
    wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency "$url" >"$out" &
    wrk_pid=$!
    while kill -0 "$wrk_pid" 2>/dev/null; do
        busy=$(others_busy) && quiet["$v-$phase"]="no ($busy running)" && echo "   (not quiet: $busy)" >&2
        sleep 1
    done
    wait "$wrk_pid"
    wrk_pid=
    if [[ -n $flood_pid ]]; then
        wait "$flood_pid"
        flood_pid=
    fi
    runs_rps["$v-$phase"]+=" $(rps_of "$out")"
    runs_p99["$v-$phase"]+=" $(p99_of "$out")"
    errs["$v-$phase"]=$(( ${errs["$v-$phase"]:-0} + $(errs_of "$out") ))
    echo "   $v $phase round $r: $(rps_of "$out") req/s, p99 $(p99_of "$out") ms, errors $(errs_of "$out")" >&2
}

maximum() { printf '%s\n' "$@" | sort -g | tail -1; }

mkdir -p "$results"
declare -A rps p99 errs quiet flood runs_rps runs_p99 runs_frps runs_fp99 runs_fmax
for v in "${variants[@]}"; do
    quiet["$v-alone"]=yes
    quiet["$v-flood"]=yes
    echo "== $v (http://127.0.0.1:${port[$v]}/): warm-up" >&2
    wrk -t"$THREADS" -c"$CONNS" -d"$WARMUP" "http://127.0.0.1:${port[$v]}/" >/dev/null
done
for ((round = 1; round <= ROUNDS; round++)); do
    for v in "${variants[@]}"; do
        measure "$v" alone "$round"
        measure "$v" flood "$round"
        f=$results/isolation-$v-flood-login-$round.txt
        line=$(grep '^FLOOD ' "$f") ||
            { echo "isolation.sh: the $v flood printed no summary" >&2; exit 1; }
        # Answer counts add up over the rounds; rates and latencies are per round.
        for kv in ${line#FLOOD }; do
            flood["$v-${kv%%=*}"]=$(( ${flood["$v-${kv%%=*}"]:-0} + ${kv#*=} ))
        done
        runs_frps[$v]+=" $(rps_of "$f")"
        runs_fp99[$v]+=" $(p99_of "$f")"
        runs_fmax[$v]+=" $(to_ms "$(awk '$1 == "Latency" { print $4; exit }' "$f")")"
        echo "   $v flood round $round: $(rps_of "$f") sign-ins/s; so far 401 ${flood["$v-s401"]}," \
            "403 ${flood["$v-s403"]}, 429 ${flood["$v-s429"]}, 503 ${flood["$v-s503"]}," \
            "other 5xx ${flood["$v-s5xx"]}, other ${flood["$v-sother"]}, timeouts ${flood["$v-timeout"]}" >&2
    done
done
for v in "${variants[@]}"; do
    for phase in alone flood; do
        # shellcheck disable=SC2086 # word splitting of the per-round lists is the point
        rps["$v-$phase"]=$(median ${runs_rps["$v-$phase"]})
        # shellcheck disable=SC2086
        p99["$v-$phase"]=$(median ${runs_p99["$v-$phase"]})
    done
    # shellcheck disable=SC2086
    flood["$v-rps"]=$(median ${runs_frps[$v]})
    # shellcheck disable=SC2086
    flood["$v-p99"]=$(maximum ${runs_fp99[$v]})
    # shellcheck disable=SC2086
    flood["$v-max"]=$(maximum ${runs_fmax[$v]})
done

# The proxy must still be healthy after the floods.
for v in "${variants[@]}"; do
    body=$(curl -sS --max-time 5 "http://127.0.0.1:${port[$v]}/")
    [[ $body == hello ]] || { echo "isolation.sh: after the flood ag-$v answered '$body'" >&2; exit 1; }
done

# authgate's own warnings (the lockout, per-connection errors) go with the figures.
for v in "${variants[@]}"; do cp "$tmp/ag-$v.log" "$results/isolation-ag-$v.log"; done

verdict() { awk -v r="$1" 'BEGIN { print (r >= 0.9) ? "yes" : "**no**" }'; }
flood_ok() { # variant: only 401/403/429/503 answers, no timeout, no socket error
    local v=$1
    if ((flood["$v-s5xx"] + flood["$v-sother"] + flood["$v-timeout"] + flood["$v-connect"] +
        flood["$v-read"] + flood["$v-write"] == 0)); then echo yes; else echo "**no**"; fi
}
{
    echo "# authgate: a sign-in flood against the proxied path"
    echo
    echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ), repo at $(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo '?')$([[ -n ${AUTHGATE_BIN:-} ]] && echo ' (authgate prebuilt, not necessarily from it)')"
    echo "- machine: $(nproc) cores, $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)"
    echo "- $(nginx -v 2>&1), $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2), authgate $bin"
    echo "- $ROUNDS rounds, each: alone then during the flood, per variant; req/s and p99 are medians over the rounds, the flood's answers are summed, its p99 and max are the worst round's"
    echo "- proxied load: wrk -t$THREADS -c$CONNS -d$DURATION --latency (warm-up $WARMUP), GET / of a 6-byte body on a public route, plain HTTP"
    echo "- flood: wrk -t$FTHREADS -c$FCONNS -d${FLOOD_S}s --timeout $FTIMEOUT, POST /auth/login {\"login\":\"$EMAIL\",\"password\":\"$WRONG\"} to a verified account; it starts ${LEAD} s before the proxied load and stops ${LEAD} s after it"
    echo "- [passwords] defaults: argon2id 19456 KiB, 2 passes, workers = cores ($(nproc)), max_queue = $((8 * $(nproc))) (waiting + running; $FCONNS flood connections$( ((FCONNS <= 8 * $(nproc))) && echo ' never overflow it' || echo ' overflow it: 503 SERVICE_BUSY expected')), max_wait = 500ms, priority = idle (SCHED_IDLE); [rate_limit] refusal_delay = 1s"
    echo "- **open**: \`[rate_limit] enabled = false\`, so every flood request reaches the hashing pool; **limited**: the default rate limits (login 20/1m per IP, 10/1m per account), so the flood should mostly get 429"
    echo "- 403 = USER_BLOCKED: the account locks after 10 failures ([otp] lockout_threshold); a locked sign-in still verifies a dummy hash, so it costs the pool as much as a wrong password"
    echo "- everything (authgate, the nginx upstream, both wrk processes) shares the same $(nproc) cores: the flood's own wrk takes CPU from the proxied load too, so a ratio below 1 is not all authgate's doing"
    echo "- flood timeouts = wrk's count of sign-ins not answered within $FTIMEOUT (their answers, if any, are still in the status counts); sign-ins still waiting when wrk stops are counted nowhere"
    echo "- quiet machine = no rustc/cargo and no other wrk seen during the measured run"
    echo
    echo "| variant | proxy alone req/s | during flood req/s | ratio (≥ 0.90) | ok | p99 alone (ms) | p99 during flood (ms) | proxy errors alone / flood | quiet alone / flood |"
    echo "|---|---:|---:|---:|---|---:|---:|---:|---|"
    for v in "${variants[@]}"; do
        r=$(ratio "${rps[$v-flood]}" "${rps[$v-alone]}")
        echo "| $v | ${rps[$v-alone]} | ${rps[$v-flood]} | $r | $(verdict "$r") | ${p99[$v-alone]} | ${p99[$v-flood]} |" \
            "${errs[$v-alone]} / ${errs[$v-flood]} | ${quiet[$v-alone]} / ${quiet[$v-flood]} |"
    done
    echo
    echo "| flood | sign-ins/s | p99 (ms) | max (ms) | 401 | 403 locked | 429 | 503 | other 5xx | other | timeouts | socket errors (connect/read/write) | only 401/403/429/503 |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"
    for v in "${variants[@]}"; do
        echo "| $v | ${flood[$v-rps]} | ${flood[$v-p99]} | ${flood[$v-max]} | ${flood[$v-s401]} | ${flood[$v-s403]} |" \
            "${flood[$v-s429]} | ${flood[$v-s503]} | ${flood[$v-s5xx]} | ${flood[$v-sother]} | ${flood[$v-timeout]} |" \
            "${flood[$v-connect]}/${flood[$v-read]}/${flood[$v-write]} | $(flood_ok "$v") |"
    done
} | tee "$results/isolation.md"
