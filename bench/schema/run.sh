#!/bin/sh
# Validation cost of a large Pydantic-style schema, against the keyword
# subset validator the gateway had before the full vocabulary (git commit
# 5d09350, PROTOCOL section 4's subset only), on the same instance.
#
#   bench/schema/run.sh [ROUNDS]     (default 50; needs gcc, valgrind, git)
#
# Both validators are built with -O2 from their sources; callgrind counts
# the instructions of validate_all() only (compiling the schema and
# copying the instance are outside it). The old validator cannot compile
# $defs/$ref/anyOf, so it validates subset.json: the same constraints
# written in the subset (make_inputs.py writes both).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
rounds=${1:-50}
old_rev=${MIZAN_OLD_SCHEMA_REV:-5d09350}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT INT TERM

python3 "$here/make_inputs.py" "$work"
mkdir -p "$work/old"
git -C "$root" show "$old_rev:src/schema.c" > "$work/old/schema.c"
git -C "$root" show "$old_rev:src/schema.h" > "$work/old/schema.h"
cflags="-O2 -g -std=gnu17 -D_GNU_SOURCE -I$root/include"
libs="$(pkg-config --cflags --libs jansson libpcre2-8) -lpthread -lm"
gcc $cflags -I"$work/old" -I"$root/src" -o "$work/bench_old" "$here/schema_bench.c" "$work/old/schema.c" \
    "$root/src/error.c" $libs
gcc $cflags -I"$root/src" -o "$work/bench_new" "$here/schema_bench.c" "$root/src/schema.c" \
    "$root/src/schema_format.c" "$root/src/error.c" $libs

count() { # binary schema -> instructions of validate_all
    valgrind --tool=callgrind --callgrind-out-file="$work/cg.out" --toggle-collect=validate_all \
        "$1" "$2" "$work/instance.json" "$rounds" > "$work/run.log" 2>&1 || { cat "$work/run.log"; exit 1; }
    grep -m1 '^summary:' "$work/cg.out" | awk '{print $2}'
}
old=$(count "$work/bench_old" "$work/subset.json")
new_subset=$(count "$work/bench_new" "$work/subset.json")
new_pyd=$(count "$work/bench_new" "$work/pydantic.json")
per() { echo "$1 $rounds" | awk '{printf "%.0f", $1 / $2}'; }
ratio() { echo "$1 $2" | awk '{printf "%.2f", $1 / $2}'; }
echo "instructions per validation (instance: 200 line items, $(wc -c < "$work/instance.json") bytes):"
echo "  old subset validator, subset schema:   $(per "$old")"
echo "  new validator,        subset schema:   $(per "$new_subset")  ($(ratio "$new_subset" "$old")x old)"
echo "  new validator,        Pydantic schema: $(per "$new_pyd")  ($(ratio "$new_pyd" "$old")x old)"
