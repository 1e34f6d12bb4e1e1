#!/usr/bin/env bash
# Instructions per operation of every case of benches/instructions.rs (or of those named), counted
# by callgrind, which repeats exactly where timings do not. Needs valgrind.
#
#   bash benches/instructions.sh                 # every case
#   bash benches/instructions.sh same lean_same  # some
set -euo pipefail
cd "$(dirname "$0")/.."

command -v valgrind >/dev/null || {
    echo "valgrind is not installed (Debian: apt-get install valgrind)" >&2
    exit 1
}
binary=$(cargo bench --bench instructions --no-run 2>&1 |
    sed -n 's/.*Executable .*(\(.*\)).*/\1/p' | tail -n 1)
[ -x "$binary" ] || {
    echo "could not build benches/instructions.rs" >&2
    exit 1
}

cases=("$@")
if [ ${#cases[@]} -eq 0 ]; then
    mapfile -t cases < <("$binary" | sed -n 's/^  \([a-z_0-9]*\) .*/\1/p')
fi

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
printf '%-22s %12s\n' case instructions
for case in "${cases[@]}"; do
    iterations=20000
    case $case in *lifecycle*) iterations=2000 ;; esac
    collected=$(valgrind --tool=callgrind --toggle-collect='*measure*' \
        --callgrind-out-file="$out/$case" "$binary" "$case" "$iterations" 2>&1 |
        sed -n 's/.*Collected : \([0-9]*\).*/\1/p')
    printf '%-22s %12.1f\n' "$case" "$(echo "$collected / $iterations" | bc -l)"
done
