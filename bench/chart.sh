#!/usr/bin/env bash
# Draws a benchmark's table as an SVG bar chart with gnuplot, since a reader compares bars
# faster than columns of numbers. The three benchmark scripts call it with a TSV of their
# own results; bench/charts/ holds charts of the figures recorded in bench/README.md.
#
#   bash bench/chart.sh TSV SVG TITLE YLABEL
#
# TSV: tab-separated, a header line, then one line per group of bars. The first column
# names the group (it becomes the x-axis label), each further column is one series (its
# header is the legend entry) and holds a number, or "-" where there is none. Each bar
# carries its value. Installs Debian's gnuplot-nox with apt-get when gnuplot is missing.
set -euo pipefail

die() {
    printf 'chart: %s\n' "$*" >&2
    exit 1
}

(($# == 4)) || die "usage: bash bench/chart.sh TSV SVG TITLE YLABEL"
TSV=$1 SVG=$2 TITLE=$3 YLABEL=$4
[[ -s $TSV ]] || die "$TSV is missing or empty"

install_gnuplot() {
    command -v gnuplot >/dev/null && return
    printf '>> installing gnuplot-nox with apt-get (Debian package; needs root)\n' >&2
    local sudo=()
    ((EUID == 0)) || sudo=(sudo)
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        gnuplot-nox >/dev/null || die "apt-get install gnuplot-nox failed"
}

# A gnuplot string literal: double-quoted, with its own escapes.
quoted() {
    local text=${1//\\/\\\\}
    printf '"%s"' "${text//\"/\\\"}"
}

columns=$(head -n 1 "$TSV" | awk -F'\t' '{ print NF }')
groups=$(($(wc -l <"$TSV") - 1))
((columns >= 2 && groups >= 1)) || die "$TSV needs a header, a label column, one series and one row"
series=$((columns - 1))
# Group labels are broken after each ", " (see wrap below); each group is as wide as its
# bars or its longest label line, and the chart as wide as its groups or its title.
longest=$(tail -n +2 "$TSV" | cut -f 1 | awk '{ n = split($0, part, ", "); for (i = 1; i <= n; i++)
    if (length(part[i]) > max) max = length(part[i]) } END { print max + 0 }')
group=$((70 + 45 * series))
((group < 8 * longest + 20)) && group=$((8 * longest + 20))
width=$((groups * group + 160))
((width < 9 * ${#TITLE} + 80)) && width=$((9 * ${#TITLE} + 80))
((width < 640)) && width=640
((width > 1800)) && width=1800

install_gnuplot
gnuplot <<EOF || die "gnuplot could not draw $TSV"
set terminal svg size $width,480 dynamic font "sans,12" background rgb "white"
set output $(quoted "$SVG")
set datafile separator "\t"
set datafile missing "-"
set title $(quoted "$TITLE") noenhanced font "sans,14"
set ylabel $(quoted "$YLABEL") noenhanced
set key above horizontal noenhanced autotitle columnhead
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border rgb "#333333"
set boxwidth 0.9
set grid ytics lc rgb "#dddddd"
set border 3
set xtics nomirror noenhanced
set ytics nomirror
set yrange [0:*]
set offsets 0, 0, graph 0.1, 0
set bmargin 5
# Each bar's value just above it: bar j (from 0) of group k stands at k + (j - (n-1)/2) / (n + gap).
bar(k, j) = k + (j - ($series - 1) / 2.0) / ($series + 1)
wrap(s) = strstrt(s, ", ") == 0 ? s : s[1:strstrt(s, ", ") - 1] . "\n" . wrap(s[strstrt(s, ", ") + 2:])
plot for [i=2:$columns] $(quoted "$TSV") using i:xtic(wrap(strcol(1))) title columnheader(i), \
     for [i=2:$columns] $(quoted "$TSV") using (bar(\$0, i - 2)):i:(sprintf("%g", column(i))) \
         with labels offset 0, 0.7 font "sans,10" notitle
EOF
[[ -s $SVG ]] || die "gnuplot wrote no $SVG"
