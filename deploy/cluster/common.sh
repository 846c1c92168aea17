# Shared by up.sh, down.sh and status.sh: a local cluster of three voters and one
# non-voting edge on 127.0.0.1, each node with its own SoftHSM token directory,
# PINs (0600 files), configuration and data dir under DIR/<node>.
# Node k of NODES listens on 75k0 (cluster), 75k1 (API), 75k2 (OCSP), 75k3 (metrics).
# A small nginx front on 7500 (DIR/front) passes OCSP and CRL requests to any node
# that answers: its address is the one written into certificates.
# INKAN_CLUSTER_PORTS=8500 moves them all (85k0…, front on 8500), for a second
# cluster beside the first; it must be the same for up.sh, status.sh and down.sh.
set -euo pipefail
bin=$(realpath "${1:-bin/inkan}")
dir=${2:-.inkan-cluster}
module=/usr/lib/softhsm/libsofthsm2.so
NODES=(node1 node2 node3 edge1)
ports=${INKAN_CLUSTER_PORTS:-7500}
case $ports in *[!0-9]* | "") echo "INKAN_CLUSTER_PORTS=$ports: want a number such as 8500" >&2; exit 1 ;; esac
umask 077
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

port() { # port NODE OFFSET
	local i
	for i in "${!NODES[@]}"; do
		[ "${NODES[$i]}" = "$1" ] && { echo $((ports + (i + 1) * 10 + $2)); return; }
	done
	return 1
}
home() { echo "$dir/$1"; }
# alive PID: the process runs (an exited one whose parent is gone stays a zombie
# until init reaps it, and kill -0 still succeeds on it).
alive() { kill -0 "$1" 2>/dev/null && ! grep -q '^State:.*Z' "/proc/$1/status" 2>/dev/null; }
running() { [ -f "$(home "$1")/pid" ] && alive "$(cat "$(home "$1")/pid")"; }
admin() { # admin NODE ARGS...
	local n=$1; shift
	"$bin" admin --config "$(home "$n")/node.yaml" "$@"
}
front_port=$ports
front() { echo "$dir/front"; }
front_running() { [ -f "$(front)/nginx.pid" ] && alive "$(cat "$(front)/nginx.pid")"; }
nginx_bin() { command -v nginx 2>/dev/null || { [ -x /usr/sbin/nginx ] && echo /usr/sbin/nginx; }; }
