#!/usr/bin/env bash
# inkan's enrollment against its nearest peer, smallstep's step-ca, side by side on
# this machine, the same disk (a temp dir under $TMPDIR, default /tmp), the same load
# generator (deploy/bench/peer): each request made before the clock starts, C
# keep-alive clients, a fixed count N, runs alternating A B A B for R rounds;
# the median of each and the ratios are printed last.
#
#   step-ca v0.30.2, built here with the Go toolchain (its build needs Debian's
#     libpcsclite-dev and pkg-config, installed with apt-get if missing), its
#     files written by `peer stepca-init`: a root and an intermediate CA (ECDSA
#     P-256, key in a file), a JWK provisioner, bbolt (fsync on every commit).
#   inkan as a user runs it: `inkan server` processes (one node; then three
#     voters that joined as deploy/cluster/up.sh joins them), each with its
#     SoftHSM token, logs at info to a file, the signed audit log (always on),
#     the J-LIS stand-in's root and CRL, a self-signed CA. The enrollment API's
#     per-address rate limit is off (request_rate: -1, a load test's setting)
#     and the profile accepts the stand-in's test cards with its per-person caps
#     raised: that, the addresses and the temp dirs are all that differs from
#     deploy/cluster/up.sh.
#
#   deploy/bench/peer.sh [BIN]       (BIN default bin/inkan; `make bench` runs it)
#   PEER_N=2000 PEER_C=64 PEER_ROUNDS=3 PEER_CARDS=64 deploy/bench/peer.sh
#   PEER_KEEP=1 keeps the temp dir (logs, states) for a look afterwards.
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=$(realpath "${1:-bin/inkan}")
N=${PEER_N:-2000} C=${PEER_C:-64} R=${PEER_ROUNDS:-3} CARDS=${PEER_CARDS:-64}
for v in "$N" "$C" "$R" "$CARDS"; do
	case $v in *[!0-9]* | "" | 0) echo "peer.sh: PEER_N, PEER_C, PEER_ROUNDS and PEER_CARDS must be positive numbers" >&2; exit 1 ;; esac
done
stepca_version=v0.30.2
module=/usr/lib/softhsm/libsofthsm2.so

# step-ca's build needs libpcsclite-dev and pkg-config (its YubiKey KMS, cgo).
need=()
dpkg -s libpcsclite-dev >/dev/null 2>&1 || need+=(libpcsclite-dev)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
if [ ${#need[@]} -gt 0 ]; then
	sudo=""
	[ "$(id -u)" -eq 0 ] || sudo=sudo
	echo "peer.sh: installing ${need[*]}" >&2
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null ||
		{ $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null; }
fi
cache=${XDG_CACHE_HOME:-$HOME/.cache}/inkan-bench/stepca-$stepca_version
stepca=$cache/step-ca
if [ ! -x "$stepca" ]; then
	echo "peer.sh: building step-ca $stepca_version into $cache (once; several minutes)" >&2
	mkdir -p "$cache"
	(cd "$cache" && GOBIN=$cache GOFLAGS=-mod=mod go install "github.com/smallstep/certificates/cmd/step-ca@$stepca_version")
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/inkan-peer.XXXXXX")
pids=()
cleanup() {
	local p
	for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	if [ -n "${PEER_KEEP:-}" ]; then echo "peer.sh: kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
umask 077
go build -o "$work/peer" ./deploy/bench/peer
peer=$work/peer
mapfile -t ports < <("$peer" ports 14)
fail() { echo "peer.sh: $*" >&2; exit 1; }

# ---- step-ca ----
sdir=$work/stepca
step_url=https://127.0.0.1:${ports[0]}
"$peer" stepca-init -dir "$sdir" -addr "127.0.0.1:${ports[0]}"
"$stepca" "$sdir/ca.json" >"$sdir/log" 2>&1 &
pids+=($!)
for _ in $(seq 300); do
	curl -sf --cacert "$sdir/root_ca.crt" "$step_url/health" >/dev/null 2>&1 && break
	kill -0 "${pids[-1]}" 2>/dev/null || { tail -20 "$sdir/log"; fail "step-ca exited"; }
	sleep 0.2
done
curl -sf --cacert "$sdir/root_ca.crt" "$step_url/health" >/dev/null || fail "step-ca not healthy; see $sdir/log"

# ---- inkan: the J-LIS stand-in and the cards (one SoftHSM token each) ----
jlis=$work/jlis
cards=$work/cards
mkdir -p "$cards/tokens"
printf 'directories.tokendir = %s/tokens\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n' "$cards" >"$cards/softhsm2.conf"
newpin() { od -An -N12 -tx1 /dev/urandom | tr -d ' \n'; }
newpin >"$cards/so.pin"
od -An -N8 -tx1 /dev/urandom | tr -d ' \n' | tr a-f A-F >"$cards/card.pin"
"$bin" jpki-sim --dir "$jlis" init >/dev/null
# A person each (their birth dates differ), one per client: a person's
# enrolments are serialised by the CA (two at once, one is refused as
# person-changed), so clients must not share a card.
echo "peer.sh: issuing $CARDS simulated cards (a person each)" >&2
labels=()
for i in $(seq "$CARDS"); do
	SOFTHSM2_CONF=$cards/softhsm2.conf "$bin" hsm init-token --module "$module" --label "card$i" \
		--so-pin-file "$cards/so.pin" --pin-file "$cards/card.pin" >/dev/null
	SOFTHSM2_CONF=$cards/softhsm2.conf "$bin" jpki-sim --dir "$jlis" issue-card --module "$module" --token "card$i" \
		--pin-file "$cards/card.pin" --birth "$(printf '%04d-%02d-%02d' $((1940 + i % 60)) $((1 + i % 12)) $((1 + i % 28)))" >/dev/null 2>&1
	labels+=("card$i")
done
card_list=$(IFS=,; echo "${labels[*]}")

# node K of a cluster uses ports[1+4(K-1)…]: cluster, API, OCSP, metrics.
nport() { echo "${ports[$((1 + 4 * ($1 - 1) + $2))]}"; }
prepare() { # prepare DIR K: token, PINs, config of node K
	local h=$1 k=$2 how
	mkdir -p "$h/tokens"
	printf 'directories.tokendir = %s/tokens\nobjectstore.backend = file\nlog.level = ERROR\n' "$h" >"$h/softhsm2.conf"
	newpin >"$h/so.pin"
	newpin >"$h/user.pin"
	SOFTHSM2_CONF=$h/softhsm2.conf "$bin" hsm init-token --module "$module" --label "inkan-node$k" \
		--so-pin-file "$h/so.pin" --pin-file "$h/user.pin" >/dev/null
	how="  bootstrap: true"
	[ "$k" = 1 ] || how="  join:
    address: 127.0.0.1:$(nport 1 0)
    token_file: $h/join-token"
	cat >"$h/node.yaml" <<YAML
data_dir: $h/data
cluster:
  name: inkan-bench
  node_id: node$k
  bind: 127.0.0.1:$(nport "$k" 0)
  role: voter
$how
api:
  listen: 127.0.0.1:$(nport "$k" 1)
ocsp:
  listen: 127.0.0.1:$(nport "$k" 2)
  public_url: http://127.0.0.1:$(nport 1 2)/
metrics:
  listen: 127.0.0.1:$(nport "$k" 3)
hsm:
  module: $module
  token: inkan-node$k
  pin_file: $h/user.pin
jpki:
  anchors: [$jlis/root.pem]
  policies: [1.2.392.200149.8.5.1.0.20]
  revocation: {kind: crl, file: $jlis/crl.der}
enroll:
  request_rate: -1
log:
  level: info
  format: text
drain_timeout: 5s
YAML
}
start_node() { # start_node DIR
	SOFTHSM2_CONF=$1/softhsm2.conf "$bin" server --config "$1/node.yaml" >>"$1/log" 2>&1 &
	pids+=($!)
	echo $! >"$1/pid"
}
admin() { local h=$1; shift; "$bin" admin --config "$h/node.yaml" "$@"; }
wait_ready() { # wait_ready DIR
	for _ in $(seq 600); do
		[[ $(admin "$1" -o json --timeout 2s cluster status 2>/dev/null || true) == *'"ready": true'* ]] && return
		kill -0 "$(cat "$1/pid")" 2>/dev/null || { tail -20 "$1/log" >&2; fail "the node in $1 exited"; }
		sleep 0.2
	done
	fail "the node in $1 not ready after 120 s; see $1/log"
}
# bench_profiles DIR: the shipped profiles, one version up, accepting the
# stand-in's test cards with the per-person and per-client caps out of the way.
bench_profiles() {
	local p cur test_policy=1.2.392.200149.8.5.1.0.20
	for p in authentication signing; do
		cur=$(admin "$1" policy show "$p")
		awk -v test="$test_policy" '
			/^version: / { print "version: " $2 + 1; next }
			/^  jpkiPolicies: \[/ { sub(/\]/, ", \"" test "\"]") }
			/^  maxCertificatesPerPerson: / { print "  maxCertificatesPerPerson: 1000000"; next }
			/^    perPerson: / { print "    perPerson: {every: 1ms, burst: 1000000}"; next }
			/^    perClient: / { print "    perClient: {every: 1ms, burst: 1000000}"; next }
			{ print }' <<<"$cur" >"$1/$p-bench.yaml"
		if ! grep -q "$test_policy" "$1/$p-bench.yaml" || ! grep -q 'burst: 1000000' "$1/$p-bench.yaml"; then
			fail "profile $p: could not make its bench version (see $1/$p-bench.yaml)"
		fi
		admin "$1" policy apply --yes "$1/$p-bench.yaml" >/dev/null
	done
}
cluster() { # cluster NAME K: K voters under $work/NAME, ready, with a CA and the bench profiles
	local name=$1 k=$2 i h
	for i in $(seq "$k"); do
		h=$work/$name/node$i
		prepare "$h" "$i"
		if [ "$i" != 1 ]; then
			SOFTHSM2_CONF=$h/softhsm2.conf "$bin" join-keys --config "$h/node.yaml" -o json >"$h/join.keys" 2>>"$h/log"
			admin "$work/$name/node1" cluster join-token --role voter --keys "$h/join.keys" --ttl 10m 2>/dev/null >"$h/join-token"
		fi
		start_node "$h"
		wait_ready "$h"
		if [ "$i" = 1 ]; then
			admin "$h" ca init --cn "inkan bench CA" --country JP --self-sign >/dev/null
			bench_profiles "$h"
		fi
	done
}
stop_cluster() { # stop_cluster NAME
	local h p
	for h in "$work/$1"/node*; do
		p=$(cat "$h/pid")
		kill -TERM "$p" 2>/dev/null || true
		wait "$p" 2>/dev/null || true
	done
}
urls() { # urls NAME K
	local i list=()
	for i in $(seq "$2"); do list+=("https://127.0.0.1:$(nport "$i" 1)"); done
	(IFS=,; echo "${list[*]}")
}

out=$work/results
: >"$out"
run() { # run LABEL CMD...: one timed run, its line kept
	local label=$1 line
	shift
	line=$("$@") || fail "$label failed"
	echo "round $round [load $(cut -d' ' -f1 /proc/loadavg)] $line" | tee -a "$out"
}
stepca_pid=${pids[0]}
stepca_run() { "$peer" stepca -dir "$sdir" -url "$step_url" -n "$N" -c "$C" -pids "$stepca_pid"; }
inkan_run() { # inkan_run NAME K [-full]
	local name=$1 k=$2 h list=(); shift 2
	for h in "$work/$name"/node*; do list+=("$(cat "$h/pid")"); done
	SOFTHSM2_CONF=$cards/softhsm2.conf "$peer" inkan -url "$(urls "$name" "$k")" -ca "$work/$name/node1/data/cluster-ca.pem" \
		-cards "$card_list" -pin-file "$cards/card.pin" -n "$N" -c "$C" -pids "$(IFS=,; echo "${list[*]}")" "$@"
}

echo "# peer.sh $(date -u +%Y-%m-%dT%H:%M:%SZ), N=$N C=$C rounds=$R cards=$CARDS; $(uptime)"
echo "# $(nproc) cores, $(uname -sr), $(go version | cut -d' ' -f3), step-ca $stepca_version, inkan $(git describe --always --dirty 2>/dev/null || echo ?)"
cat <<'TXT'
# stepca-sign: POST /1.0/sign {csr, ott}: step-ca verifies the one-time token
#   (ES256 JWT of a JWK provisioner), records its jti in bbolt (one-time use),
#   checks the CSR against the token, signs an X.509 certificate with the
#   intermediate key (ECDSA P-256, in a file) and stores it in bbolt. Made before
#   timing: the token, the subscriber's key and CSR.
# inkan-enroll-premade: POST /v1/enroll {proof, csr}: inkan verifies the card's
#   proof (RS256 JWS, x5c), the JPKI chain to the J-LIS root and its CRL, the
#   nonce's MAC, the CSR, the profile (policy, caps), then issues: the intent
#   (the nonce's use, the person record, the audit leaf) committed through Raft,
#   lint, the CA signature in SoftHSM (PKCS#11, ECDSA P-256), the issued record
#   committed through Raft. Made before timing: the challenge (POST
#   /v1/enroll/challenge), the card's proof through PKCS#11, the key and CSR.
# inkan-enroll-full: the same with the challenge and the card's signature
#   (SoftHSM RSA-2048, in this process) inside the timing; key and CSR made before.
# server-cpu: the CPU (user + system) of the server's processes (all three
#   voters for the cluster) during the timed part, over the requests; client-cpu:
#   the load generator's own (for inkan-enroll-full it includes the card's RSA
#   signature). Both from /proc and getrusage, in units of 10 ms.
TXT

echo "## one inkan node"
cluster one 1
for round in $(seq "$R"); do
	run stepca stepca_run
	run inkan-premade inkan_run one 1
	run stepca stepca_run
	run inkan-full inkan_run one 1 -full
done
stop_cluster one
echo "## three inkan voters (clients spread over the three nodes' APIs)"
cluster three 3
for round in $(seq "$R"); do
	run stepca stepca_run
	run inkan3-premade inkan_run three 3
done
stop_cluster three

echo "## medians (rate/s) and ratios to step-ca"
echo "# paired: each inkan run over the step-ca run just before it (same minute, same load)"
median() { sort -n | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
rates() { grep " what=$1 " "$out" | sed 's/.* rate=\([0-9.]*\)\/s.*/\1/'; }
paired() { # paired WHAT: the ratio of each WHAT run to the step-ca run before it
	sed 's/.* what=\([^ ]*\) .* rate=\([0-9.]*\)\/s.*/\1 \2/' "$out" |
		awk -v w="$1" '$1 == "stepca-sign" { s = $2 } $1 == w && s > 0 { printf "%.2f\n", $2 / s }'
}
base=$(rates stepca-sign | median)
sed 's/.* what=\([^ ]*\) .*/\1/' "$out" | sort -u | while read -r w; do
	m=$(rates "$w" | median)
	line=$(printf '%-28s median %7.1f/s (every run: %s)' "$w" "$m" "$(rates "$w" | paste -sd' ')")
	if [ "$w" != stepca-sign ]; then
		line+=$(printf '; ratio of medians %.2f; paired ratios %s, median %s' \
			"$(awk -v a="$m" -v b="$base" 'BEGIN { print a / b }')" "$(paired "$w" | paste -sd' ')" "$(paired "$w" | median)")
	fi
	echo "$line"
done
echo "## CPU per request (medians, ms): the server's processes, the load generator"
sed 's/.* what=\([^ ]*\) .*/\1/' "$out" | sort -u | while read -r w; do
	printf '%-28s server %5.2f  client %5.2f\n' "$w" \
		"$(grep " what=$w " "$out" | sed 's/.* server-cpu=\([0-9.]*\)ms.*/\1/' | median)" \
		"$(grep " what=$w " "$out" | sed 's/.* client-cpu=\([0-9.]*\)ms.*/\1/' | median)"
done
