#!/usr/bin/env bash
# Every benchmark docs/BENCHMARKS.md reports, one after another, on a quiet
# machine: the Go benchmarks (each package's, once), the OCSP serving
# comparison with nginx and openssl, and the failover time. Figures go to
# stdout; copy them into docs/BENCHMARKS.md with the date and `uptime`.
#   deploy/bench/run-all.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ) $(uptime)"
echo "## go test -bench (each package once)"
# BenchmarkSnapshotInstallYear (ca/crl) builds a year's CRL index: its
# archive (one synced file per CRL) goes to memory when there is some.
if [ -z "${INKAN_BENCH_SCRATCH:-}" ] && [ -d /dev/shm ]; then
	export INKAN_BENCH_SCRATCH=/dev/shm
fi
go test -run '^$' -bench . -benchtime 1x -count 1 -timeout 60m \
	./audit/ ./audit/log/ ./ca/ ./ca/crl/ ./ca/enroll/ ./cluster/ ./hsm/ ./jpki/ ./node/ ./ocsp/ ./policies/
echo "## OCSP serving: inkan, nginx, openssl"
deploy/bench/ocsp.sh
echo "## failover"
deploy/bench/failover.sh 20
