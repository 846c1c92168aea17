#!/usr/bin/env bash
# Start a local inkan cluster: node1 bootstraps and makes a self-signed CA, node2 and
# node3 join as voters with join tokens granted, through node1's admin socket, to the
# keys each made in its HSM (inkan join-keys; the CA key reaches them wrapped for
# that transport key, HSM to HSM), edge1 joins as a non-voting OCSP/CRL edge. Every
# node trusts the J-LIS stand-in in DIR/jlis (its CRL file). Nodes that already have
# state are restarted from it (no token needed). An nginx front on 127.0.0.1:7500
# (Debian's nginx-light) passes OCSP and CRL requests to whichever node answers;
# certificates name it, so a relying party that follows a certificate's OCSP or CRL
# address is answered while any node runs.
#   deploy/cluster/up.sh [BIN] [DIR]     (defaults: bin/inkan, ./.inkan-cluster)
# INKAN_CLUSTER_RAFT="HEARTBEAT ELECTION LEASE" (e.g. "1s 1s 500ms") writes those Raft
# timeouts into the node configurations it makes (the shipped defaults otherwise): the
# failover benchmark measures another setting with it.
here=$(dirname "$0")
. "$here/common.sh"

prepare() { # prepare NODE: token dir, PINs, token, config (once)
	local n=$1 h; h=$(home "$n")
	mkdir -p "$h/tokens"
	[ -f "$h/softhsm2.conf" ] || printf 'directories.tokendir = %s/tokens\nobjectstore.backend = file\nlog.level = ERROR\n' "$h" >"$h/softhsm2.conf"
	newpin() { od -An -N12 -tx1 /dev/urandom | tr -d ' \n'; }
	[ -f "$h/so.pin" ] || newpin >"$h/so.pin"
	[ -f "$h/user.pin" ] || newpin >"$h/user.pin"
	# Read the whole list before matching: under pipefail, a grep -q reading a
	# pipe may exit first and the writer die of SIGPIPE, failing the pipeline.
	local tokens
	tokens=$(SOFTHSM2_CONF="$h/softhsm2.conf" "$bin" hsm list --module "$module")
	if ! grep -qw "inkan-$n" <<<"$tokens"; then
		SOFTHSM2_CONF="$h/softhsm2.conf" "$bin" hsm init-token --module "$module" --label "inkan-$n" \
			--so-pin-file "$h/so.pin" --pin-file "$h/user.pin" >/dev/null
	fi
	[ -f "$h/node.yaml" ] && return
	local how="" role=voter hb el ls
	case $n in
	node1) how="  bootstrap: true" ;;
	edge*) role=nonvoter ;;
	esac
	if [ -n "${INKAN_CLUSTER_RAFT:-}" ]; then
		read -r hb el ls <<<"$INKAN_CLUSTER_RAFT"
		how="  raft: {heartbeat_timeout: $hb, election_timeout: $el, leader_lease_timeout: $ls}
$how"
	fi
	if [ "$n" != node1 ]; then
		how="$how
  join:
    address: 127.0.0.1:$(port node1 0)
    token_file: $h/join-token"
	fi
	cat >"$h/node.yaml" <<YAML
data_dir: $h/data
cluster:
  name: inkan-local
  node_id: $n
  bind: 127.0.0.1:$(port "$n" 0)
  role: $role
$how
api:
  listen: 127.0.0.1:$(port "$n" 1)
ocsp:
  listen: 127.0.0.1:$(port "$n" 2)
  # Written into every certificate, the same on every node: the front before
  # all of them (in production a VIP, a DNS name over every node, a CDN).
  public_url: http://127.0.0.1:$front_port/
metrics:
  listen: 127.0.0.1:$(port "$n" 3)
hsm:
  module: $module
  token: inkan-$n
  pin_file: $h/user.pin
jpki:
  anchors: [$dir/jlis/root.pem]
  policies: [1.2.392.200149.8.5.1.0.20]
  revocation: {kind: crl, file: $dir/jlis/crl.der}
# A demo: anyone may read the audit log (in production only auditors do).
audit:
  public: true
drain_timeout: 5s
YAML
}

declare -A launched=() # the nodes this run started
start() { # start NODE in the background
	local n=$1 h; h=$(home "$n")
	if running "$n"; then echo "$n already running (pid $(cat "$h/pid"))"; return; fi
	SOFTHSM2_CONF="$h/softhsm2.conf" nohup "$bin" server --config "$h/node.yaml" >>"$h/log" 2>&1 &
	echo $! >"$h/pid"
	launched[$n]=1
}

wait_ready() { # wait_ready NODE: until its /readyz would say 200
	local n=$1 h; h=$(home "$n")
	for _ in $(seq 1 300); do
		local st
		st=$(admin "$n" -o json --timeout 2s cluster status 2>/dev/null || true)
		if [[ $st == *'"ready": true'* ]]; then
			local api=", api https://127.0.0.1:$(port "$n" 1)"
			# An edge holds no cluster CA key to certify its API's address with:
			# its API is for a TLS terminator in front, not for clients.
			[[ $n == edge* ]] && api=
			echo "$n ready (pid $(cat "$h/pid")): cluster 127.0.0.1:$(port "$n" 0)$api," \
				"ocsp http://127.0.0.1:$(port "$n" 2), metrics http://127.0.0.1:$(port "$n" 3)"
			return
		fi
		if ! running "$n"; then
			# A node found running may have been dying: a process killed with
			# SIGKILL a moment before (the README's kill step) ends a while
			# later. Start it now; one this run started that exits has failed.
			if [ -z "${launched[$n]:-}" ]; then
				start "$n"
				continue
			fi
			echo "$n exited; its log:" >&2
			tail -20 "$h/log" >&2
			exit 1
		fi
		sleep 0.2
	done
	echo "$n not ready after 60s; see $h/log" >&2
	exit 1
}

start_front() { # the nginx front before every node's OCSP listener
	local f ng; f=$(front)
	ng=$(nginx_bin) || { echo "up.sh: nginx is needed for the OCSP/CRL front on :$front_port; run deploy/install-deps.sh" >&2; exit 1; }
	mkdir -p "$f/logs"
	if [ ! -f "$f/nginx.conf" ]; then
		local servers="" n
		for n in "${NODES[@]}"; do
			servers+="		server 127.0.0.1:$(port "$n" 2) max_fails=1 fail_timeout=2s;
"
		done
		cat >"$f/nginx.conf" <<NGINX
# The local cluster's OCSP/CRL front: what certificates name. It holds nothing of
# its own; each request goes to a node, and to the next one if that node is down.
worker_processes 1;
pid $f/nginx.pid;
error_log $f/logs/error.log warn;
events { worker_connections 256; }
http {
	access_log $f/logs/access.log;
	upstream inkan_ocsp {
$servers		keepalive 16;
	}
	server {
		listen 127.0.0.1:$front_port;
		location / {
			proxy_pass http://inkan_ocsp;
			proxy_http_version 1.1;
			proxy_set_header Connection "";
			proxy_connect_timeout 1s;
			# OCSP over POST is safe to send again: it changes nothing.
			proxy_next_upstream error timeout http_502 http_503 http_504 non_idempotent;
			proxy_max_temp_file_size 0; # large CRLs stream; nothing is written to disk
		}
	}
}
NGINX
	fi
	if front_running; then echo "front already running (pid $(cat "$f/nginx.pid"))"; return; fi
	"$ng" -p "$f" -c "$f/nginx.conf" -e "$f/logs/error.log"
	echo "front ready: OCSP and CRLs on http://127.0.0.1:$front_port/ (nginx, pid $(cat "$f/nginx.pid")) before every node"
}

# The J-LIS stand-in every node trusts (jpki-sim revoke writes its CRL file).
[ -f "$dir/jlis/root.pem" ] || "$bin" jpki-sim --dir "$dir/jlis" init >/dev/null

# Nodes with state restart together (one voter alone has no quorum, so none is
# ready until a majority runs); then new nodes join one by one.
old=() new=()
for n in "${NODES[@]}"; do
	prepare "$n"
	if [ -f "$(home "$n")/data/node.pem" ]; then old+=("$n"); else new+=("$n"); fi
done
for n in "${old[@]}"; do start "$n"; done
for n in "${old[@]}"; do wait_ready "$n"; done
for n in "${new[@]}"; do
	h=$(home "$n")
	if [ "$n" != node1 ]; then
		role=voter
		case $n in edge*) role=nonvoter ;; esac
		# The join ceremony, with no operators yet (node1's admin socket grants at
		# once): the new node makes its keys and shows their fingerprints, and
		# the join is granted to exactly those keys.
		SOFTHSM2_CONF="$h/softhsm2.conf" "$bin" join-keys --config "$h/node.yaml" -o json >"$h/join.keys"
		admin node1 cluster join-token --role "$role" --keys "$h/join.keys" --ttl 10m 2>/dev/null >"$h/join-token"
	fi
	start "$n"
	wait_ready "$n"
	rm -f "$h/join-token" # spent once the node has joined
	if [ "$n" = node1 ] && ! admin node1 ca cert >/dev/null 2>&1; then
		admin node1 ca init --cn "inkan local CA" --country JP --self-sign >/dev/null
		echo "node1 made a self-signed CA"
	fi
done
# The stand-in J-LIS's cards carry the JPKI test policy, which the shipped
# profiles refuse: accept it, as a lab does (a no-op once done).
"$here/../accept-test-cards.sh" "$bin" "$(home node1)/node.yaml" "$dir"
start_front
admin node1 ca cert >"$dir/ca.pem"
echo "CA certificate: $dir/ca.pem"
echo
admin node1 cluster status
