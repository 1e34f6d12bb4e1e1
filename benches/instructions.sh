#!/usr/bin/env bash
# Instructions per operation of every case of benches/instructions.rs (or of those named), counted
# by callgrind, which repeats where timings do not. Needs valgrind.
#
#   bash benches/instructions.sh                 # every case
#   bash benches/instructions.sh same lean_same  # some
set -uo pipefail
cd "$(dirname "$0")/.."

command -v valgrind >/dev/null || {
    echo "valgrind is not installed (Debian: apt-get install valgrind)" >&2
    exit 1
}
build_log=$(mktemp)
out=$(mktemp -d)
trap 'rm -rf "$out" "$build_log"' EXIT
if ! cargo bench --bench instructions --no-run 2>"$build_log"; then
    cat "$build_log" >&2
    echo "could not build benches/instructions.rs" >&2
    exit 1
fi
binary=$(sed -n 's/.*Executable .*(\(.*\)).*/\1/p' "$build_log" | tail -n 1)
[ -x "$binary" ] || {
    cat "$build_log" >&2
    echo "could not find the built benches/instructions.rs in cargo's output" >&2
    exit 1
}

cases=("$@")
if [ ${#cases[@]} -eq 0 ]; then
    mapfile -t cases < <("$binary" | sed -n 's/^  \([a-z_0-9]*\) .*/\1/p')
fi

status=0
printf '%-22s %12s\n' case instructions
for case in "${cases[@]}"; do
    iterations=20000
    case $case in *lifecycle*) iterations=2000 ;; esac
    log="$out/$case.log"
    if ! valgrind --tool=callgrind --toggle-collect='*measure*' \
        --callgrind-out-file="$out/$case" "$binary" "$case" "$iterations" >"$log" 2>&1; then
        echo "$case failed:" >&2
        tail -n 20 "$log" >&2
        status=1
        continue
    fi
    collected=$(sed -n 's/.*Collected : \([0-9]*\).*/\1/p' "$log")
    if [ -z "$collected" ]; then
        echo "$case: callgrind reported no count" >&2
        status=1
        continue
    fi
    awk -v c="$case" -v n="$collected" -v i="$iterations" 'BEGIN { printf "%-22s %12.1f\n", c, n / i }'
done
exit $status
