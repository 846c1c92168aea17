#!/usr/bin/env bash
# Failover time of a local 3-voter cluster (deploy/cluster/up.sh, the shipped
# Raft defaults unless the cluster's node.yaml files say otherwise): ROUNDS
# times, the leader is killed with SIGKILL and the clock runs from the kill to
# the return of the next write through a survivor (an operator's `cert hold`,
# then `cert release`, through a follower's admin socket); the killed node is
# restarted before the next round. Prints each round and the median and max.
#   deploy/bench/failover.sh [ROUNDS]      (default 20; needs ports 75x0-75x3 free)
# INKAN_CLUSTER_PORTS=8500 moves the cluster's ports, as for up.sh.
. "$(dirname "$0")/../test/lib.sh"
rounds=${1:-20}
umask 077
cd "$repo"
base=${INKAN_CLUSTER_PORTS:-7500}
need_free $((base + 10)) $((base + 11)) $((base + 20)) $((base + 21)) $((base + 30)) $((base + 31)) $((base + 40))
work=$(mktemp -d /tmp/inkan-failover.XXXXXX)
C=$work/cluster B=$repo/bin/inkan
cleanup() {
	deploy/cluster/down.sh "$B" "$C" >/dev/null 2>&1 || true
	for f in "$C"/*/pid; do [ -f "$f" ] && kill -9 "$(cat "$f")" 2>/dev/null || true; done
	rm -rf "$work"
}
trap cleanup EXIT
make -s build
deploy/cluster/up.sh "$B" "$C" >"$work/up.log" 2>&1 || { cat "$work/up.log"; exit 1; }

# One certificate to hold and release: a simulated card enrolls once.
mkdir -p "$C/cards/tokens"
export SOFTHSM2_CONF=$C/cards/softhsm2.conf
printf 'directories.tokendir = %s/cards/tokens\n' "$C" >"$SOFTHSM2_CONF"
# A card's PIN has the card's form (6-16 of A-Z, 0-9): enroll refuses another.
echo so-secret >"$C/cards/so.pin"; echo CARDPIN1234 >"$C/cards/card.pin"
"$B" hsm init-token --label card1 --so-pin-file "$C/cards/so.pin" --pin-file "$C/cards/card.pin" >/dev/null
"$B" jpki-sim --dir "$C/jlis" issue-card --token card1 --pin-file "$C/cards/card.pin" >"$work/card.log" 2>&1 ||
	{ cat "$work/card.log"; exit 1; }
"$B" enroll --url "https://127.0.0.1:$((base + 21))" --ca-file "$C/node2/data/cluster-ca.pem" \
	--card pkcs11:token=card1 --card-module /usr/lib/softhsm/libsofthsm2.so \
	--card-pin-file "$C/cards/card.pin" --key "$C/cards/sub.key" --out "$C/cards/sub.pem" >/dev/null
S=$(openssl x509 -in "$C/cards/sub.pem" -noout -serial | cut -d= -f2)

ms=()
for r in $(seq 1 "$rounds"); do
	L=$(deploy/cluster/leader.sh "$B" "$C")
	F=$(deploy/cluster/leader.sh --follower "$B" "$C")
	op=hold
	[ $((r % 2)) = 0 ] && op=release
	t0=$(date +%s%N)
	kill -9 "$(cat "$C/$L/pid")"
	"$B" admin --config "$C/$F/node.yaml" --timeout 30s cert "$op" "$S" >/dev/null
	t1=$(date +%s%N)
	m=$(((t1 - t0) / 1000000))
	ms+=("$m")
	printf 'round %2d: killed %s, %s through %s after %d ms\n' "$r" "$L" "$op" "$F" "$m"
	deploy/cluster/up.sh "$B" "$C" >>"$work/up.log" 2>&1 || { cat "$work/up.log"; exit 1; }
done
sorted=$(printf '%s\n' "${ms[@]}" | sort -n)
median=$(sed -n "$(((rounds + 1) / 2))p" <<<"$sorted")
max=$(tail -1 <<<"$sorted")
echo "failover (kill -9 of the leader -> next write through a survivor), $rounds rounds: median $median ms, max $max ms"
