# The standalone sandbox's request log, read by the benchmarks (sourced, not run). The
# sandbox logs each request it receives, with its time, when started with
#   RUST_LOG=warn,qpien_sandbox::server=debug NO_COLOR=1
# shellcheck shell=bash

# The most requests the sandbox received within any 60 seconds, from its log's times
# (RFC 3339, UTC; a run crossing midnight is allowed for).
busiest_minute() {
    awk '/sandbox: request / && match($0, /T[0-9][0-9]:[0-9][0-9]:[0-9][0-9](\.[0-9]+)?Z/) {
            split(substr($0, RSTART + 1, RLENGTH - 2), hms, ":")
            t = hms[1] * 3600 + hms[2] * 60 + hms[3]
            if (n > 0 && t < last) day += 86400
            last = t
            times[++n] = t + day
        }
        END {
            best = 0
            for (first = last_in = 1; last_in <= n; last_in++) {
                while (times[last_in] - times[first] >= 60) first++
                if (last_in - first + 1 > best) best = last_in - first + 1
            }
            print best
        }' "$1"
}
