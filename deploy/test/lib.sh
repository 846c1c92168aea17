# Shared by the script tests in deploy/test: a clean copy of the repository to
# run in, as a newcomer's fresh clone is, and the ports a test needs free.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

# clean_copy DIR: the repository's tracked and new files (what a commit would
# hold), none it ignores (no bin/, .inkan-dev/ or .inkan-cluster/), into DIR.
clean_copy() {
	mkdir -p "$1"
	(cd "$repo" && git ls-files -z --cached --others --exclude-standard | xargs -0 -r sh -c 'for f; do [ -e "$f" ] && printf "%s\0" "$f"; done' sh |
		tar --null -T - -cf -) | tar -C "$1" -xf -
}

# need_free PORT...: fail, naming it, if something listens on a port the test
# is about to use (a cluster or dev node left running).
need_free() {
	local p
	for p in "$@"; do
		if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			echo "port $p is in use: stop what runs there (deploy/cluster/down.sh, or the make run shell) and try again" >&2
			exit 1
		fi
	done
}
