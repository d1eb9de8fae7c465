#!/usr/bin/env bash
# Runs end-to-end suites LANES at a time, each into its own log under LOG_DIR, and prints each
# suite's result as it ends; a failed suite's log is printed whole at the end. Exits non-zero
# when any suite failed.
#
# The suites spend their time waiting on the AWS simulator's delays (creations, listings,
# roles and stacks take seconds, as on AWS), not on the CPU: two suites at once kept the load
# of the 2-core machine under 1. Each suite binary starts its own control plane and
# simulator, on free ports, so suites do not share anything.
#
# Usage: hack/run-suites.sh LANES LOG_DIR SUITE...   (CARGO: the cargo command, default cargo)
set -uo pipefail

lanes=$1
logs=$2
shift 2
cargo=${CARGO:-cargo}
mkdir -p "$logs"
rm -f "$logs"/*.log "$logs"/*.status

# Longest first, so the lanes end together (figures: docs/performance-results.md); suites not
# listed here run after these.
longest_first=(rollouts fleet accounts faults pools safety baselines takeover)
ordered=()
for suite in "${longest_first[@]}"; do
    for wanted in "$@"; do
        [[ $wanted == "$suite" ]] && ordered+=("$suite")
    done
done
for wanted in "$@"; do
    [[ " ${ordered[*]} " == *" $wanted "* ]] || ordered+=("$wanted")
done

run_suite() {
    local suite=$1 started=$SECONDS rc
    $cargo test -p silo-testenv --test "$suite" -- --nocapture >"$logs/$suite.log" 2>&1
    rc=$?
    echo "$rc" >"$logs/$suite.status"
    local result
    result=$(grep -o 'test result: .*' "$logs/$suite.log" | tail -n 1)
    echo "suite $suite: $([[ $rc == 0 ]] && echo ok || echo FAILED) after $((SECONDS - started)) s: ${result:-no test result (see below)}"
}

echo "running ${#ordered[@]} suites, $lanes at a time: ${ordered[*]} (logs in $logs)"
running=0
for suite in "${ordered[@]}"; do
    if ((running >= lanes)); then
        wait -n
        running=$((running - 1))
    fi
    run_suite "$suite" &
    running=$((running + 1))
done
wait

failed=()
for suite in "${ordered[@]}"; do
    [[ $(cat "$logs/$suite.status" 2>/dev/null) == 0 ]] || failed+=("$suite")
done
for suite in "${failed[@]}"; do
    echo
    echo "===== the log of the failed suite $suite ($logs/$suite.log) ====="
    cat "$logs/$suite.log"
done
if ((${#failed[@]} > 0)); then
    echo "failed suites: ${failed[*]}" >&2
    exit 1
fi
echo "all ${#ordered[@]} suites passed"
