#!/usr/bin/env bash
# Makes the fixture of TestUpgradeFromPreviousRelease (upgrade_e2e_test.go): the
# state of a one-node cluster made by the release before person records, with
# the binary of that release. Two homonyms (one name, one birth date, another
# gender and address: the previous release took them for one person) enrol with
# JPKI cards of the production policy: A an authentication and a signing
# certificate, B an authentication certificate. The signing profile is the shipped
# v1, untouched; the authentication profile is v2, the shipped one with a validity
# of ten years, so that the fixture's certificates outlive the test for a while
# (they end with the cards', in 2031).
# Everything lives under /tmp/inkan-upgrade-fixture, the prefix the test rewrites:
#   node.yaml, softhsm2.conf, tokens/ (the node's token and the two cards), PINs,
#   data/ (Raft log, snapshots, state), jlis/ (the stand-in J-LIS, its CRL),
#   a.pem a.key a-sign.pem a-sign.key b.pem b.key (what the subscribers hold).
# It was made with the binary built from main at 1dfcfcd (dual control landed,
# person records not yet):
#   git archive 1dfcfcd | tar -x -C /tmp/old && (cd /tmp/old && go build -o inkan ./cmd/inkan)
#   cmd/inkan/testdata/upgrade/make-fixture.sh /tmp/old/inkan cmd/inkan/testdata/upgrade/previous-release.tar.gz
#   make-fixture.sh OLD-INKAN OUT.tar.gz
set -euo pipefail
old=$(cd "$(dirname "${1:?the previous release\'s inkan binary}")" && pwd)/$(basename "$1")
out=$(cd "$(dirname "${2:?the output .tar.gz}")" && pwd)/$(basename "$2")
root=/tmp/inkan-upgrade-fixture
module=/usr/lib/softhsm/libsofthsm2.so
ports=(7901 7902 7903 7904) # cluster, api, ocsp, metrics: the test gives the node others

rm -rf "$root"
umask 077
mkdir -p "$root/tokens"
printf 'directories.tokendir = %s/tokens\nobjectstore.backend = file\nlog.level = ERROR\n' "$root" >"$root/softhsm2.conf"
export SOFTHSM2_CONF=$root/softhsm2.conf
echo FIXTURESO1 >"$root/so.pin"
echo FIXTURENODE1 >"$root/user.pin"
echo CARDPIN1234 >"$root/card.pin"

"$old" hsm init-token --module "$module" --label node1 --so-pin-file "$root/so.pin" --pin-file "$root/user.pin"
"$old" jpki-sim --dir "$root/jlis" init
name='同名　試験'
birth=1985-05-05
"$old" hsm init-token --module "$module" --label card-a --so-pin-file "$root/so.pin" --pin-file "$root/card.pin"
"$old" jpki-sim --dir "$root/jlis" issue-card --module "$module" --token card-a --pin-file "$root/card.pin" --policy production \
	--name "$name" --birth "$birth" --gender 2 --address '東京都千代田区試験町一丁目１番１号'
"$old" hsm init-token --module "$module" --label card-b --so-pin-file "$root/so.pin" --pin-file "$root/card.pin"
"$old" jpki-sim --dir "$root/jlis" issue-card --module "$module" --token card-b --pin-file "$root/card.pin" --policy production \
	--name "$name" --birth "$birth" --gender 1 --address '北海道札幌市中央区試験町二丁目２番２号' --prefecture 北海道 --municipality 札幌市

cat >"$root/node.yaml" <<YAML
data_dir: $root/data
cluster:
  name: inkan-upgrade
  node_id: node1
  bind: 127.0.0.1:${ports[0]}
  bootstrap: true
  raft:
    heartbeat_timeout: 300ms
    election_timeout: 300ms
    leader_lease_timeout: 150ms
api:
  listen: 127.0.0.1:${ports[1]}
ocsp:
  listen: 127.0.0.1:${ports[2]}
  public_url: http://127.0.0.1:${ports[2]}/
metrics:
  listen: 127.0.0.1:${ports[3]}
hsm:
  module: $module
  token: node1
  pin_file: $root/user.pin
drain_timeout: 5s
jpki:
  anchors: [$root/jlis/root.pem]
  revocation: {kind: crl, file: $root/jlis/crl.der}
enroll: {linkage_interval: 1s}
YAML

"$old" server --config "$root/node.yaml" >"$root/stdout" 2>"$root/log" &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 600); do
	if curl -fsS "http://127.0.0.1:${ports[3]}/readyz" >/dev/null 2>&1; then break; fi
	sleep 0.1
done
admin() { "$old" admin --socket "$root/data/admin.sock" "$@"; }
admin ca init --cn "inkan upgrade fixture CA" --country JP --self-sign
for _ in $(seq 100); do # the leader seeds the shipped profiles
	if admin policy show signing >/dev/null 2>&1; then break; fi
	sleep 0.1
done
admin policy show authentication >"$root/authentication.yaml"
sed -i -e 's/^version: 1$/version: 2/' -e 's/^validity: 8760h$/validity: 87600h/' "$root/authentication.yaml"
grep -q '^validity: 87600h$' "$root/authentication.yaml"
admin policy apply --yes "$root/authentication.yaml"
rm "$root/authentication.yaml"
enroll() { # card key out [profile]
	"$old" enroll --url "https://127.0.0.1:${ports[1]}" --ca-file "$root/data/cluster-ca.pem" \
		--card "pkcs11:token=$1" --card-module "$module" --card-pin-file "$root/card.pin" \
		--key "$root/$2" --out "$root/$3" ${4:+--profile "$4"} --timeout 30s
}
enroll card-a a.key a.pem
enroll card-a a-sign.key a-sign.pem signing
enroll card-b b.key b.pem
kill -TERM $server
wait $server || true
trap - EXIT
rm -f "$root/log" "$root/stdout" "$root/data/admin.sock"
tar -C /tmp -czf "$out" inkan-upgrade-fixture
ls -l "$out"
