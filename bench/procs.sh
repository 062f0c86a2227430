# Process control and /proc readings for the benchmarks (sourced, not run): free ports, starting
# checks, stopping only what we started, CPU time and RSS of a process family.
# shellcheck shell=bash

declare -a STARTED=() # every pid we started, stopped on exit

# A port nothing listens on, below Linux's ephemeral range so that no outgoing connection
# holds it. Another process may still take it first: the starters retry on a new one.
free_port() {
    local port
    for _ in {1..100}; do
        port=$((20000 + RANDOM % 12000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return
        fi
    done
    die "found no free port"
}

# The inode of the socket listening on 127.0.0.1:$1, from the kernel's socket table.
listening_inode() {
    awk -v local_address="0100007F:$(printf '%04X' "$1")" \
        '$2 == local_address && $4 == "0A" { print $10; exit }' /proc/net/tcp
}

# Whether process $1 holds the listening socket of port $2. Accepting connections is not
# proof enough: when the port was taken meanwhile, the other listener answers while our
# process is still retrying its bind.
owns_listener() {
    local inode fd
    inode=$(listening_inode "$2")
    [[ -n $inode ]] || return 1
    for fd in /proc/"$1"/fd/*; do
        [[ $(readlink "$fd" 2>/dev/null) == "socket:[$inode]" ]] && return 0
    done
    return 1
}

# Waits until process $1 listens on port $2; fails within seconds if it cannot (port
# taken, bad config), so the caller can try another port.
wait_listening() {
    local pid=$1 port=$2
    for _ in {1..100}; do
        kill -0 "$pid" 2>/dev/null || return 1
        owns_listener "$pid" "$port" && return 0
        sleep 0.05
    done
    return 1
}

# Drops a pid from STARTED once it is gone, so that a later recycled pid is never hit.
forget() {
    local other
    local -a kept=()
    for other in "${STARTED[@]}"; do [[ $other == "$1" ]] || kept+=("$other"); done
    STARTED=("${kept[@]}")
}

stop() {
    local pid=$1
    forget "$pid"
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in {1..50}; do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# nginx's master and its workers, or the facade alone.
family() { echo "$1" "$(pgrep -P "$1" | tr '\n' ' ' || true)"; }

# utime+stime in clock ticks, summed over the pids given. Fields are counted after the
# last ")" because the command name may itself hold spaces.
cpu_ticks() {
    local pid stat total=0
    for pid in "$@"; do
        stat=$(<"/proc/$pid/stat") || continue
        stat=${stat##*) }
        read -r -a fields <<<"$stat"
        total=$((total + fields[11] + fields[12]))
    done
    echo "$total"
}

rss_kib() {
    local pid total=0 kib
    for pid in "$@"; do
        kib=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status" 2>/dev/null || true)
        total=$((total + ${kib:-0}))
    done
    echo "$total"
}

# Installs with apt-get the Debian package of each command missing, given as
# "command:package" pairs (needs root, or sudo). Uses the caller's log, die and TMP.
install_commands() {
    local pair
    local -a packages=()
    for pair in "$@"; do
        command -v "${pair%%:*}" >/dev/null || packages+=("${pair#*:}")
    done
    ((${#packages[@]} == 0)) && return
    log "installing ${packages[*]} with apt-get (Debian packages; needs root)"
    local sudo=()
    ((EUID == 0)) || sudo=(sudo)
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${packages[@]}" >"$TMP/apt.log" 2>&1 || {
        cat "$TMP/apt.log" >&2
        die "apt-get install ${packages[*]} failed"
    }
}

# Starts a program with a clean environment on a free port, retrying on another port when
# it cannot listen: $1 names it (its log is $TMP/$1.log), $2 is the variable that gives
# it its port, the rest is VAR=value settings and then the program. Sets STARTED_PID and
# STARTED_PORT.
start_on_free_port() {
    local name=$1 port_var=$2 port pid attempt
    shift 2
    for attempt in 1 2 3 4 5; do
        port=$(free_port)
        env -i PATH="$PATH" RUST_LOG=warn "$port_var=$port" "$@" >>"$TMP/$name.log" 2>&1 &
        pid=$!
        STARTED+=("$pid")
        if wait_listening "$pid" "$port"; then
            # shellcheck disable=SC2034 # read by the scripts that source this file
            STARTED_PID=$pid STARTED_PORT=$port
            return
        fi
        stop "$pid"
        log "$name did not start on port $port (attempt $attempt)"
    done
    die "$name did not start; see $TMP/$name.log"
}

# Renders an nginx template into $TMP/$1/nginx.conf and starts nginx on a free port,
# retrying on another when it cannot listen: $1 names it, $2 is the template (@DIR@ and
# @PORT@ are filled in), the rest are "@KEY@=value" pairs that fill the template too.
# Sets STARTED_PID and STARTED_PORT.
start_nginx() {
    local name=$1 template=$2
    shift 2
    local dir=$TMP/$name conf port pid pair attempt
    mkdir -p "$dir"
    for attempt in 1 2 3 4 5; do
        port=$(free_port)
        conf=$(<"$template")
        conf=${conf//@DIR@/"$dir"}
        conf=${conf//@PORT@/"$port"}
        for pair in "$@"; do conf=${conf//"${pair%%=*}"/"${pair#*=}"}; done
        printf '%s\n' "$conf" >"$dir/nginx.conf"
        nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" 2>>"$dir/stderr.log" &
        pid=$!
        STARTED+=("$pid")
        if wait_listening "$pid" "$port"; then
            # shellcheck disable=SC2034 # read by the scripts that source this file
            STARTED_PID=$pid STARTED_PORT=$port
            return
        fi
        stop "$pid"
        log "$name did not start on port $port (attempt $attempt): $(cat "$dir/error.log" "$dir/stderr.log" 2>/dev/null | tail -n 1)"
    done
    die "$name did not start; see $dir/error.log"
}

# "field=value" $2 from the BENCH line that hotpath.lua's summary writes into wrk's
# output, file $1.
bench_field() { grep '^BENCH ' "$1" | tr ' ' '\n' | awk -F= -v k="$2" '$1 == k { print $2 }'; }

# The EXIT trap of scripts with nothing else to clean up: stops every process started,
# and removes TMP unless the run failed (its logs are kept then):
#   trap stop_all_and_clean EXIT; trap 'exit 130' INT TERM
stop_all_and_clean() {
    local status=$? pid
    trap - EXIT INT TERM
    for pid in "${STARTED[@]}"; do stop "$pid"; done
    if [[ $status != 0 ]]; then log "exit status $status; logs kept in $TMP"; else rm -rf "$TMP"; fi
}
