#!/usr/bin/env bash
# Repository hygiene `make check` runs besides gofmt, vet and staticcheck:
#   - go.mod and go.sum are what `go mod tidy` makes;
#   - every script the Makefile names exists and is executable;
#   - no script pipes into `grep -q` (under pipefail, grep leaving early kills
#     the writer with SIGPIPE and the pipeline fails at random): read the whole
#     output first, or match with [[ ]].
set -euo pipefail
cd "$(dirname "$0")/.."
bad=0
if ! diff=$(go mod tidy -diff 2>&1); then
	echo "go.mod/go.sum are not tidy (run go mod tidy):"
	echo "$diff" | head -40
	bad=1
fi
for s in $(grep -o 'deploy/[A-Za-z0-9_./-]*\.sh' Makefile | sort -u); do
	[ -x "$s" ] || { echo "Makefile names $s, which does not exist or is not executable"; bad=1; }
done
scripts=$(git ls-files '*.sh' .ci/run)
if hits=$(grep -nE '\|[[:space:]]*grep[[:space:]]+(-[A-Za-z]*q|--quiet)' $scripts); then
	echo "a pipe into grep -q (read the whole output first):"
	echo "$hits"
	bad=1
fi
exit $bad
