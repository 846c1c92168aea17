#!/usr/bin/env bash
# Make the shipped profiles accept the stand-in J-LIS's simulated cards, which
# carry the JPKI test policy (1.2.392.200149.8.5.1.0.20): each profile is
# applied once more, one version up, with the test policy added to its
# jpkiPolicies. A lab's choice for `make run` and deploy/cluster/up.sh, never
# production's. Profiles that already accept it are left alone.
#   deploy/accept-test-cards.sh BIN NODE.yaml OUTDIR
set -euo pipefail
bin=${1:?binary} cfg=${2:?node config} out=${3:?directory for the profiles written}
test_policy=1.2.392.200149.8.5.1.0.20
for p in authentication signing; do
	cur=$("$bin" admin --config "$cfg" policy show "$p")
	if grep -q "$test_policy" <<<"$cur"; then
		continue
	fi
	awk -v test="$test_policy" '
		/^version: / { print "version: " $2 + 1; next }
		/^  jpkiPolicies: \[/ { sub(/\]/, ", \"" test "\"]") }
		{ print }' <<<"$cur" >"$out/$p-test-cards.yaml"
	grep -q "$test_policy" "$out/$p-test-cards.yaml" || {
		echo "accept-test-cards.sh: profile $p has no jpkiPolicies line to extend" >&2
		exit 1
	}
	"$bin" admin --config "$cfg" policy apply --yes "$out/$p-test-cards.yaml" >/dev/null
done
