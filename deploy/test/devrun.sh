#!/usr/bin/env bash
# The dev appliance as a newcomer meets it, in a clean copy of the repository:
# deploy/dev-run.sh (what `make run` runs after building) starts and prints
# three commands, which are run exactly as printed; a second start while the
# first runs is refused before it prints or changes anything; the logs of
# one run survive the next.
# A start after a first run that stopped before the profiles accepted the
# simulated card makes them accept it.
#   deploy/test/devrun.sh     (INKAN_DEV_PORTS=8400: other ports, as dev-run.sh)
. "$(dirname "$0")/lib.sh"
ports=${INKAN_DEV_PORTS:-7400}
need_free "$ports" $((ports + 43)) $((ports + 80)) $((ports + 81)) $((ports + 90))
work=$(mktemp -d /tmp/inkan-devrun.XXXXXX)
first=
cleanup() { # on every exit: the running dev node stops, the copy goes, the status stays
	local rc=$?
	if [ -n "$first" ]; then
		kill -TERM "$first" 2>/dev/null || true
		wait "$first" 2>/dev/null || true # 143, its SIGTERM: not this script's status
	fi
	rm -rf "$work"
	exit "$rc"
}
trap cleanup EXIT
clean_copy "$work"
cd "$work"
go build -o bin/inkan ./cmd/inkan

fail() { echo "devrun.sh: $*" >&2; exit 1; }
start() { # start OUT: dev-run.sh in the background, until its banner or its exit
	deploy/dev-run.sh bin/inkan .inkan-dev >"$1" 2>&1 &
	first=$!
	for _ in $(seq 600); do
		grep -q '^Ctrl-C stops it' "$1" && return 0
		kill -0 "$first" 2>/dev/null || { cat "$1"; fail "dev-run.sh exited before it was ready"; }
		sleep 0.1
	done
	cat "$1"
	fail "dev-run.sh not ready after 60 s"
}
stop() {
	kill -TERM "$first"
	wait "$first" || true
	first=
}

start out1
# The three commands it prints, each an indented line after "N. …:".
mapfile -t cmds < <(awk '/^  [123]\. / { getline; sub(/^ +/, ""); print }' out1)
[ "${#cmds[@]}" = 3 ] || { cat out1; fail "found ${#cmds[@]} commands in the banner, want 3"; }
for c in "${cmds[@]}"; do
	echo "+ $c"
	bash -euo pipefail -c "$c"
done

# A second `make run` while the first runs: refused at once, nothing printed
# on stdout (not even the build's command line), the running node's logs
# untouched.
log_before=$(wc -c <.inkan-dev/node.log)
if make --no-print-directory run >out2 2>err2; then
	fail "a second make run on the same state started"
fi
[ ! -s out2 ] || { cat out2; fail "the refused start printed on stdout"; }
grep -q 'already runs' err2 || { cat err2; fail "the refused start did not say why"; }
[ "$(wc -c <.inkan-dev/node.log)" -ge "$log_before" ] || fail "the refused start truncated node.log"
kill -0 "$first" || fail "the refused start stopped the running node"

# Profiles that refuse the simulated card, as a first run stopped between
# making the CA and accepting the test policy leaves them: each applied once
# more without the test policy.
for p in authentication signing; do
	cur=$(bin/inkan admin --config .inkan-dev/node.yaml policy show "$p")
	awk '/^version: / { print "version: " $2 + 1; next }
		{ gsub(/, "1\.2\.392\.200149\.8\.5\.1\.0\.20"/, ""); print }' <<<"$cur" >"$p-no-test.yaml"
	if grep -q '1\.2\.392\.200149\.8\.5\.1\.0\.20' "$p-no-test.yaml"; then fail "could not take the test policy out of $p"; fi
	bin/inkan admin --config .inkan-dev/node.yaml policy apply --yes "$p-no-test.yaml" >/dev/null
done
if bash -euo pipefail -c "${cmds[0]}" >enroll-refused 2>&1; then fail "enroll passed with profiles that refuse the test policy"; fi
grep -q 'urn:inkan:problem:policy-denied' enroll-refused || { cat enroll-refused; fail "enroll was refused, but not as policy-denied"; }

# Stop and start again: the first run's log is still there, behind its
# separator, and the printed enroll works again.
stop
start out3
[ "$(grep -c '^=== make run ' .inkan-dev/node.log)" = 2 ] || fail "node.log does not hold both runs"
[ "$(grep -c '^=== make run ' .inkan-dev/jlis.log)" = 2 ] || fail "jlis.log does not hold both runs"
echo "+ ${cmds[0]}"
bash -euo pipefail -c "${cmds[0]}" || fail "enroll after a restart: the profiles do not accept the simulated card again"
stop
echo "devrun.sh: the three printed commands ran; a second start was refused; logs kept across runs; a restart accepts the simulated card"
