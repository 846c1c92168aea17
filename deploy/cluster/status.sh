#!/usr/bin/env bash
# Show each running node's view of the local cluster.
#   deploy/cluster/status.sh [BIN] [DIR]
here=$(dirname "$0")
. "$here/common.sh"
for n in "${NODES[@]}"; do
	echo "== $n"
	if running "$n"; then
		admin "$n" --timeout 5s cluster status || true
	else
		echo "not running"
	fi
	echo
done
echo "== front"
if front_running; then
	echo "nginx (pid $(cat "$(front)/nginx.pid")) on http://127.0.0.1:$front_port/ before every node's OCSP listener"
else
	echo "not running"
fi
