#!/usr/bin/env bash
# The long run of the property tests in tests/properties.rs: the same
# invariants with many more generated cases, in release mode.
#
#   benches/fuzz.sh [cases]       (default 20000 per property; the test
#                                  suite runs 500-2000)
#
# Prints each property's result and the total wall time; a failure prints
# the minimal failing input proptest shrank it to.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CASES=${1:-20000}
cd "$ROOT"
start=$(date +%s)
PROPTEST_CASES=$CASES cargo test --release --test properties -- --test-threads 2 2>&1 | grep -E "^test |test result|minimal failing|panicked"
echo "cases_per_property=$CASES properties=$(grep -c '#\[test\]' tests/properties.rs) seconds=$(($(date +%s) - start))"
