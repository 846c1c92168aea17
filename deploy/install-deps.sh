#!/usr/bin/env bash
# Installs, with apt-get, what inkan needs to build, run and test and is not yet on
# this machine. Idempotent: prints nothing and changes nothing when all is present.
#   deploy/install-deps.sh          build, run and test needs
#   deploy/install-deps.sh --bench  also the benchmark tools (wrk, taskset, ip)
set -euo pipefail

need=()
have_file() { [ -e "$1" ]; }
have_cmd() { command -v "$1" >/dev/null 2>&1; }

have_file /usr/lib/softhsm/libsofthsm2.so || need+=(softhsm2)
have_cmd pkcs11-tool || need+=(opensc)
have_cmd openssl || need+=(openssl)
have_cmd gcc || need+=(gcc)
have_file /usr/include/stdlib.h || need+=(libc6-dev)
have_cmd make || need+=(make)
have_cmd curl || need+=(curl) # the README's walk-through fetches a CRL with it
# The local cluster's OCSP/CRL front, the relying party's login in the end-to-end
# test, and the serving benchmark's baseline.
have_cmd nginx || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
have_cmd flock || need+=(util-linux) # make run checks its data dir is free with it
# The end-to-end test's relying party on GnuTLS: certtool, ocsptool, gnutls-cli.
have_cmd ocsptool || need+=(gnutls-bin)
if [ "${1:-}" = "--bench" ]; then
	have_cmd wrk || need+=(wrk)
	have_cmd taskset || need+=(util-linux)
	have_cmd ip || need+=(iproute2)
fi

[ ${#need[@]} -eq 0 ] && exit 0

sudo=""
if [ "$(id -u)" -ne 0 ]; then
	have_cmd sudo || { echo "install-deps: need root (or sudo) to install: ${need[*]}" >&2; exit 1; }
	sudo="sudo"
fi
echo "install-deps: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
