#!/usr/bin/env bash
# Name the node that leads the local cluster, as its running nodes see it, or
# with --follower a running voter that does not lead (a survivor to write
# through when the leader is killed). Waits up to 30 s for one.
#   deploy/cluster/leader.sh [--follower] [BIN] [DIR]
which=leader
if [ "${1:-}" = --follower ]; then
	which=follower
	shift
fi
here=$(dirname "$0")
. "$here/common.sh"

state() { # state NODE: its Raft state (Leader, Follower, …), empty if it does not answer
	local st
	st=$(admin "$1" -o json --timeout 2s cluster status 2>/dev/null || true)
	if [[ $st =~ \"state\":\ \"([A-Za-z]+)\" ]]; then echo "${BASH_REMATCH[1]}"; fi
}
for _ in $(seq 1 150); do
	found=
	for n in "${NODES[@]}"; do
		[[ $n == edge* ]] && continue
		running "$n" || continue
		s=$(state "$n")
		if [ "$which" = leader ] && [ "$s" = Leader ]; then found=$n; break; fi
		if [ "$which" = follower ] && [ "$s" = Follower ]; then found=$n; break; fi
	done
	if [ -n "$found" ]; then
		echo "$found"
		exit 0
	fi
	sleep 0.2
done
echo "leader.sh: no running node is the $which after 30 s" >&2
exit 1
