#!/usr/bin/env bash
# Runs the README's shell blocks exactly as printed, one after another in one
# shell (as a newcomer types them), under `set -euo pipefail`, in a clean copy
# of the repository; then the kill/restart block 20 times more. A block
# preceded by a `<!-- readme-test: skip (why) -->` line is not run; every other
# ```sh block is. A printed command that fails fails this script.
#   deploy/test/readme.sh [--keep]   (--keep leaves the copy and its cluster)
. "$(dirname "$0")/lib.sh"
keep=${1:-}
need_free 7500 7511 7512 7521 7531 7541 7542
work=$(mktemp -d /tmp/inkan-readme.XXXXXX)
cleanup() {
	[ -x "$work/deploy/cluster/down.sh" ] && [ -x "$work/bin/inkan" ] &&
		(cd "$work" && deploy/cluster/down.sh >/dev/null 2>&1 || true)
	# a killed node that was not restarted
	for f in "$work"/.inkan-cluster/*/pid; do [ -f "$f" ] && kill -9 "$(cat "$f")" 2>/dev/null || true; done
	if [ "$keep" = --keep ]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
clean_copy "$work"

# The README's runnable blocks, each as a function so that one can run again.
awk '
	/^<!-- readme-test: skip/ { skip = 1; next }
	/^```sh$/ { if (!skip) { n++; print "block" n "() {"; inblock = 1; start = NR + 1 }; skip = 0; next }
	/^```/ && inblock { print "}"; print "lines[" n "]=" start; inblock = 0; next }
	/^```/ { skip = 0 }
	inblock { print }
	END { print "nblocks=" n }
' "$work/README.md" >"$work/.readme-blocks.sh"

cd "$work"
. ./.readme-blocks.sh
[ "$nblocks" -ge 4 ] || { echo "readme.sh: only $nblocks runnable blocks found in README.md" >&2; exit 1; }
kill_block=
for i in $(seq 1 "$nblocks"); do
	echo "=== README.md block $i (line ${lines[$i]}) ==="
	"block$i" > >(tee "$work/.block$i.out") 2>&1
	if [[ $(declare -f "block$i") == *'kill -9'* ]]; then kill_block=$i; fi
done
# up.sh advertises only what a client can use: no API for the edge, whose
# certificate cannot name its address.
grep -q '^edge1 ready' "$work/.block1.out" || { echo "readme.sh: up.sh did not report edge1 ready" >&2; exit 1; }
if grep -E '^edge1 ready.*api ' "$work/.block1.out"; then
	echo "readme.sh: up.sh advertises the edge's API" >&2
	exit 1
fi
[ -n "$kill_block" ] || { echo "readme.sh: no block kills the leader" >&2; exit 1; }

# The kill/restart step, again and again: the leader dies, a survivor takes
# the write, up.sh brings the dead node back.
for round in $(seq 1 20); do
	echo "=== kill/restart round $round (README.md line ${lines[$kill_block]}) ==="
	"block$kill_block"
done
echo "README.md: $nblocks blocks and 20 kill/restart rounds ran as printed"
