#!/usr/bin/env bash
# The dev appliance behind `make run`, like `vault server -dev`: one node with
# everything it needs, state under ./.inkan-dev (made on the first run, reused
# after):
#   - a SoftHSM token for the node, PINs in 0600 files;
#   - the J-LIS stand-in (jpki-sim): its root, trusted by the node, its CRL
#     served on 127.0.0.1:7481 (see INKAN_DEV_PORTS below), and a simulated
#     My Number Card (a SoftHSM token);
#   - a one-node config (written once; edit it freely, it is kept);
#   - the node, and on its first start a self-signed CA.
# Once ready it prints what listens where and three commands to try. Ctrl-C
# stops it; running it again resumes from the same state.
#   deploy/dev-run.sh BIN DIR
# INKAN_DEV_PORTS=8400 moves the ports of a new DIR (cluster 8400, API 8443,
# OCSP 8480, J-LIS CRL 8481, metrics 8490), for a second dev node beside the
# first; it must be the same on every run with that DIR.
set -euo pipefail
bin=${1:?binary}; dir=${2:?state dir}
module=/usr/lib/softhsm/libsofthsm2.so
ports=${INKAN_DEV_PORTS:-7400}
case $ports in *[!0-9]* | "") echo "INKAN_DEV_PORTS=$ports: want a number such as 8400" >&2; exit 1 ;; esac
p_cluster=$ports p_api=$((ports + 43)) p_ocsp=$((ports + 80)) p_jlis=$((ports + 81)) p_metrics=$((ports + 90))

umask 077
mkdir -p "$dir/tokens"
dir=$(cd "$dir" && pwd)
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")
conf="$dir/softhsm2.conf"

# One dev node per state directory: if one runs, say so before doing or
# printing anything else (the node holds an flock on its data dir's node.lock
# while it runs; flock(1) asks for the same lock without waiting).
if [ -f "$dir/data/node.lock" ] && ! flock -n "$dir/data/node.lock" true; then
	echo "an inkan dev node already runs on $dir (pid $(cat "$dir/data/node.lock" 2>/dev/null || echo '?')): stop it first (Ctrl-C where 'make run' runs)" >&2
	exit 1
fi
if [ ! -f "$conf" ]; then
	printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n' \
		"$dir/tokens" >"$conf"
fi
export SOFTHSM2_CONF="$conf"

newpin() { od -An -N12 -tx1 /dev/urandom | tr -d ' \n'; }
for f in so.pin user.pin; do [ -f "$dir/$f" ] || newpin >"$dir/$f"; done
# A card's signature PIN is 6-16 upper-case letters and digits (inkan enroll
# checks the form before it logs in to the card).
[ -f "$dir/card.pin" ] || od -An -N8 -tx1 /dev/urandom | tr -d ' \n' | tr a-f A-F >"$dir/card.pin"

tokens=$("$bin" hsm list --module "$module")
if ! grep -qw 'inkan-dev' <<<"$tokens"; then
	"$bin" hsm init-token --module "$module" --label inkan-dev \
		--so-pin-file "$dir/so.pin" --pin-file "$dir/user.pin"
fi

# The J-LIS stand-in and one simulated card (test policy, made-up holder).
jlis="$dir/jlis"
if [ ! -f "$jlis/root.pem" ]; then
	"$bin" jpki-sim --dir "$jlis" init
fi
if ! grep -qw 'demo-card' <<<"$tokens"; then
	"$bin" hsm init-token --module "$module" --label demo-card \
		--so-pin-file "$dir/so.pin" --pin-file "$dir/card.pin"
	"$bin" jpki-sim --dir "$jlis" issue-card --module "$module" --token demo-card --pin-file "$dir/card.pin" >/dev/null
fi

cfg="$dir/node.yaml"
if [ ! -f "$cfg" ]; then
	cat >"$cfg" <<YAML
# inkan dev node, written by deploy/dev-run.sh on the first run (kept after:
# edit it freely). Every option is explained in deploy/examples/node.yaml.
data_dir: $dir/data
cluster:
  name: inkan-dev
  node_id: dev1
  bind: 127.0.0.1:$p_cluster
  bootstrap: true
api:
  listen: 127.0.0.1:$p_api
ocsp:
  listen: 127.0.0.1:$p_ocsp
metrics:
  listen: 127.0.0.1:$p_metrics
hsm:
  module: $module
  token: inkan-dev
  pin_file: $dir/user.pin
# The J-LIS stand-in's root and CRL: simulated cards only (test policy OID).
jpki:
  anchors: [$jlis/root.pem]
  policies: [1.2.392.200149.8.5.1.0.20]
  revocation:
    kind: crl
    url: http://127.0.0.1:$p_jlis/crl
# A demo: anyone may read the audit log (in production only auditors do, with
# their certificates; it holds keyed hashes, never personal data in clear).
audit:
  public: true
log:
  level: info
  format: text
drain_timeout: 5s
YAML
	echo "wrote $cfg"
fi

pids=()
stop() {
	trap - INT TERM EXIT
	echo
	echo "stopping (state kept in $dir; 'make run' resumes it)"
	for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
}
trap stop INT TERM EXIT

# The logs are appended to, one run after another, each behind a separator.
sep="=== make run $(date -u +%Y-%m-%dT%H:%M:%SZ) pid $$ ==="
echo "$sep" >>"$dir/jlis.log"
echo "$sep" >>"$dir/node.log"
"$bin" jpki-sim --dir "$jlis" serve-crl --listen 127.0.0.1:$p_jlis >>"$dir/jlis.log" 2>&1 &
pids+=($!)
"$bin" server --config "$cfg" 2>>"$dir/node.log" >/dev/null &
node=$!
pids+=($node)
echo "starting the node (log: $dir/node.log) …"

admin() { "$bin" admin --config "$cfg" "$@"; }
for _ in $(seq 600); do
	kill -0 "$node" 2>/dev/null || { tail -20 "$dir/node.log"; echo "the node stopped; its log is above" >&2; exit 1; }
	st=$(admin --output json cluster status 2>/dev/null || true)
	if [[ $st == *'"ready": true'* ]]; then break; fi
	sleep 0.1
done
# Ready, and ours: the answer came from this run's node, not from one that
# took the data dir in the meantime.
kill -0 "$node" 2>/dev/null || { tail -20 "$dir/node.log"; echo "the node stopped; its log is above" >&2; exit 1; }
if ! admin ca cert >"$dir/ca.pem" 2>/dev/null; then
	admin ca init --cn "inkan dev CA" --org "inkan dev" --country JP --self-sign >/dev/null
	admin ca cert >"$dir/ca.pem"
fi
# The shipped profiles accept production cards only; the simulated cards carry
# the JPKI test policy. On every start, not only the first: a first run stopped
# between the CA and this step left profiles that refuse the card (a no-op
# once they accept it).
"$(dirname "$0")/accept-test-cards.sh" "$bin" "$cfg" "$dir"

rel() { realpath --relative-to="$PWD" "$1"; }
d=$(rel "$dir"); b=$(rel "$bin")
cat <<TXT

inkan dev appliance ready.
  enrollment  https://127.0.0.1:$p_api/v1/enroll   (TLS from the cluster CA: $d/data/cluster-ca.pem)
  audit API   https://127.0.0.1:$p_api/v1/audit/
  OCSP, CRLs  http://127.0.0.1:$p_ocsp/              (CA certificate: $d/ca.pem)
  metrics     http://127.0.0.1:$p_metrics/metrics  /healthz  /readyz
  admin       $b admin --config $d/node.yaml cluster status
  J-LIS stand-in CRL http://127.0.0.1:$p_jlis/crl; simulated card: token demo-card

Try, in another shell:
  1. enroll the simulated card:
     SOFTHSM2_CONF=$d/softhsm2.conf $b enroll --url https://127.0.0.1:$p_api --ca-file $d/data/cluster-ca.pem --card pkcs11:token=demo-card --card-module $module --card-pin-file $d/card.pin --key $d/demo.key --out $d/demo.pem
  2. ask OCSP about it, as a relying party:
     openssl ocsp -issuer $d/ca.pem -cert $d/demo.pem -url http://127.0.0.1:$p_ocsp/ -CAfile $d/ca.pem -no_nonce
  3. export the audit log and verify it offline:
     rm -rf $d/audit && $b audit export --url https://127.0.0.1:$p_api --cacert $d/data/cluster-ca.pem --out $d/audit && $b audit verify $d/audit

Ctrl-C stops it.
TXT
wait "$node"
