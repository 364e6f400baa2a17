# Helpers shared by the benchmark scripts (sourced, not run). The caller sets `tmp` (a scratch
# directory) and the array `pids` (processes to stop on exit) before using them.

# Waits until something listens on port $1, failing if process $2 (named $3) died first.
wait_port() { # port pid name
    local i
    for ((i = 0; i < 100; i++)); do
        if ! kill -0 "$2" 2>/dev/null; then
            echo "${0##*/}: $3 exited during start-up; its log:" >&2
            cat "$tmp/$3".log >&2 || true
            exit 1
        fi
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "${0##*/}: $3 did not open port $1 within 10 s" >&2
    exit 1
}

start() { # name port command...
    local name=$1 port=$2
    shift 2
    mkdir -p "$tmp/$name"
    (cd "$tmp/$name" && exec "$@") >"$tmp/$name.log" 2>&1 &
    pids+=($!)
    wait_port "$port" "$!" "$name"
}

others_compiling() { pgrep -x rustc >/dev/null || pgrep -x cargo >/dev/null; }

to_ms() {
    awk -v v="$1" 'BEGIN {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        f = (u == "us") ? 0.001 : (u == "ms") ? 1 : (u == "s") ? 1000 : (u == "m") ? 60000 : -1
        if (f < 0) { print "nan"; exit }
        printf "%.3f", n * f
    }'
}

# Figures from a wrk output file: req/s, p99 in milliseconds, and errors (non-2xx/3xx
# answers plus socket errors).
rps_of() { awk '/^Requests\/sec:/ { print $2 }' "$1"; }
p99_of() { to_ms "$(awk '$1 == "99%" { print $2 }' "$1")"; }
errs_of() {
    awk '/^ *Non-2xx or 3xx responses:/ { n += $NF }
        /^ *Socket errors:/ { gsub(/,/, ""); n += $4 + $6 + $8 + $10 }
        END { print n + 0 }' "$1"
}

# User plus system CPU time, in clock ticks, that process $1 and its children (nginx's
# workers) have used so far. Throughput on a shared VM swings with the neighbours; the CPU a
# proxy spends per request is its own cost, and far steadier.
cpu_ticks() {
    local p t=0 s
    for p in "$1" $(pgrep -P "$1"); do
        s=$(awk '{ print $14 + $15 }' "/proc/$p/stat" 2>/dev/null) || s=0
        t=$((t + ${s:-0}))
    done
    echo "$t"
}

# Microseconds of CPU per request: $1 clock ticks over the requests of wrk output file $2.
cpu_per_request() {
    awk -v t="$1" -v hz="$(getconf CLK_TCK)" '/ requests in / { n = $1 }
        END { printf "%.1f", (n > 0) ? t * 1e6 / hz / n : 0 }' "$2"
}

# The next two work on the calling script's associative arrays quiet_at, runs_rps, runs_p99,
# runs_cpu, errs, rps, p99 and cpu (keyed by target).

# Waits for the wrk run with pid $1 for target $2; a compiler starting meanwhile skews the
# figures, so it is noted in quiet_at[$2].
await_wrk() {
    while kill -0 "$1" 2>/dev/null; do
        others_compiling && quiet_at[$2]="no (rustc/cargo running)"
        sleep 2
    done
    wait "$1"
}

# Adds round $3's figures for target $1 (wrk output file $2; $4 the serving process's CPU
# ticks during the run) to its lists and prints them.
record_round() {
    local r p c
    r=$(rps_of "$2")
    p=$(p99_of "$2")
    c=$(cpu_per_request "$4" "$2")
    runs_rps[$1]+=" $r"
    runs_p99[$1]+=" $p"
    runs_cpu[$1]+=" $c"
    errs[$1]=$((errs[$1] + $(errs_of "$2")))
    echo "   round $3 $1: $r req/s, p99 $p ms, $c us CPU/request" >&2
}

# rps and p99 of each target named: the medians over its rounds.
take_medians() {
    local t
    for t in "$@"; do
        # shellcheck disable=SC2086 # the per-round lists are meant to split
        rps[$t]=$(median ${runs_rps[$t]})
        # shellcheck disable=SC2086
        p99[$t]=$(median ${runs_p99[$t]})
        # shellcheck disable=SC2086
        cpu[$t]=$(median ${runs_cpu[$t]})
    done
}

# The median of the numbers given as arguments.
median() { printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { printf "%.2f", (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0) ? a / b : 0 }'; }

# Round by round ratios of two per-round lists ("a1 a2 ..." over "b1 b2 ..."), as
# "median (min-max)". Each round's two runs met the same spell of the machine, so this
# paired figure is steadier than the ratio of the two medians.
paired() {
    local -a a b r=()
    read -ra a <<<"$1"
    read -ra b <<<"$2"
    local i
    for i in "${!a[@]}"; do r+=("$(ratio "${a[$i]}" "${b[$i]:-0}")"); done
    local sorted
    sorted=$(printf '%s\n' "${r[@]}" | sort -g)
    printf '%s (%s-%s)' "$(median "${r[@]}")" "$(head -1 <<<"$sorted")" "$(tail -1 <<<"$sorted")"
}
