#!/usr/bin/env bash
# Runs every Fuzz target in the module for a short time (FUZZTIME, default 5s), so a
# parser that faces the network is exercised on every CI run, not only on its seeds.
# -fuzzminimizetime 1x: minimising each new large input (a certificate) would eat the
# whole budget.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime=${FUZZTIME:-5s}
found=0
while IFS= read -r file; do
	dir=$(dirname "$file")
	for target in $(grep -oE '^func (Fuzz[A-Za-z0-9_]+)\(' "$file" | sed -E 's/^func (Fuzz[A-Za-z0-9_]+)\(/\1/'); do
		found=$((found + 1))
		echo "fuzz: ./$dir $target ($fuzztime)"
		for attempt in 1 2; do
			if go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" -fuzzminimizetime 1x "./$dir" >/tmp/inkan-fuzz.$$ 2>&1; then
				break
			fi
			# A finding always writes its input to testdata/fuzz: fail on it at once.
			# Without one, the engine itself failed (a worker late at the deadline,
			# "context deadline exceeded"); run the target once more before failing.
			if grep -q 'Failing input written' /tmp/inkan-fuzz.$$ || [ "$attempt" = 2 ]; then
				cat /tmp/inkan-fuzz.$$
				rm -f /tmp/inkan-fuzz.$$
				exit 1
			fi
			echo "fuzz: $target: the engine failed without a finding; once more"
		done
	done
done < <(git ls-files '*_test.go' 2>/dev/null | xargs -r grep -l '^func Fuzz' || true)
rm -f /tmp/inkan-fuzz.$$
echo "fuzz: $found targets ran"
