#!/usr/bin/env bash
# Stop the local cluster's nginx front, then its nodes with SIGTERM (each drains and
# exits 0). Their state stays in DIR: up.sh restarts them from it. rm -rf DIR to
# start afresh.
#   deploy/cluster/down.sh [BIN] [DIR]
here=$(dirname "$0")
. "$here/common.sh"
if front_running; then
	pid=$(cat "$(front)/nginx.pid")
	kill -QUIT "$pid" # nginx's graceful stop
	while alive "$pid"; do sleep 0.05; done
	echo "front stopped"
fi
for ((i = ${#NODES[@]} - 1; i >= 0; i--)); do
	n=${NODES[$i]}
	running "$n" || continue
	pid=$(cat "$(home "$n")/pid")
	kill -TERM "$pid"
	while alive "$pid"; do sleep 0.05; done
	rm -f "$(home "$n")/pid"
	echo "$n stopped"
done
