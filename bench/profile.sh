# perf profiling of the facade for hotpath.sh (sourced, not run), with PROFILE=1.
# shellcheck shell=bash

PERF_PID=
declare -a PROFILED=() # names of the runs perf recorded
PERF_CALL_GRAPH=${PERF_CALL_GRAPH:-dwarf}
# Samples the facade on a software clock: virtual machines often expose no hardware
# counters. The release binary keeps its symbols but has no frame pointers, so call
# chains come from DWARF unwinding of a copied stack (PERF_CALL_GRAPH=fp for a build
# with frame pointers): bigger data, but the callers of a hotspot are then known.
start_profile() {
    local name=$1
    local -a mode=(-g -F 999)
    # shellcheck disable=SC2054 # "dwarf,16384" is one argument
    [[ $PERF_CALL_GRAPH == dwarf ]] && mode=(--call-graph dwarf,16384 -F 499)
    perf record "${mode[@]}" -e cpu-clock -p "$FACADE_PID" -o "$TMP/perf-$name.data" \
        >"$TMP/perf-$name.log" 2>&1 &
    PERF_PID=$!
    STARTED+=("$PERF_PID")
    sleep 0.3 # perf attaches asynchronously
}

stop_profile() {
    kill -INT "$PERF_PID" 2>/dev/null || true
    wait "$PERF_PID" 2>/dev/null || true
    forget "$PERF_PID"
    if [[ -s $TMP/perf-$1.data ]]; then
        PROFILED+=("$1")
    else
        log "perf recorded nothing for $1: $(tail -n 3 "$TMP/perf-$1.log")"
    fi
}

# perf's column padding and comment lines, away.
tidy() { grep -v "^#" | sed -e "s/[ -]*$//" -e "/^$/d" || true; }

# Per profiled run: the self-time hotspots, then the inclusive time of the facade's own
# functions (which of our calls the hotspots sit under). --no-inline keeps perf from
# resolving inlined frames through addr2line, which takes minutes.
write_profile_report() {
    local name data
    for name in "${PROFILED[@]}"; do
        data=$TMP/perf-$name.data
        echo "## facade, $name: share of samples by object (kernel: system calls, loopback TCP)"
        echo
        perf report -i "$data" --stdio --no-children --no-inline --sort dso -g none 2>&1 | tidy
        echo
        echo "## facade, $name: perf report --no-children --percent-limit 2"
        echo
        perf report -i "$data" --stdio --no-children --percent-limit 2 --no-inline \
            --sort dso,symbol -g none 2>&1 | tidy
        echo
        echo "## facade, $name: inclusive time of qpien_rest functions (perf report --children, >= 1 %)"
        echo
        perf report -i "$data" --stdio --children --percent-limit 1 --no-inline \
            --sort symbol -g none 2>&1 | tidy | grep 'qpien_rest::' || true
        echo
    done >"$PROFILE_REPORT"
}
