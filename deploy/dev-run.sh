#!/usr/bin/env bash
# The dev appliance behind `make run`: state under ./.inkan-dev (created on first run,
# reused after), a SoftHSM token made for it with PINs in 0600 files.
#   deploy/dev-run.sh BIN DIR
set -euo pipefail
bin=${1:?binary}; dir=${2:?state dir}
module=/usr/lib/softhsm/libsofthsm2.so

umask 077
mkdir -p "$dir/tokens"
dir=$(cd "$dir" && pwd)
conf="$dir/softhsm2.conf"
if [ ! -f "$conf" ]; then
	printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n' \
		"$dir/tokens" >"$conf"
fi
export SOFTHSM2_CONF="$conf"

newpin() { od -An -N12 -tx1 /dev/urandom | tr -d ' \n'; }
[ -f "$dir/so.pin" ] || newpin >"$dir/so.pin"
[ -f "$dir/user.pin" ] || newpin >"$dir/user.pin"

if ! "$bin" hsm list --module "$module" | grep -q 'inkan-dev'; then
	"$bin" hsm init-token --module "$module" --label inkan-dev \
		--so-pin-file "$dir/so.pin" --pin-file "$dir/user.pin"
fi
"$bin" hsm list --module "$module"
echo
echo "dev token 'inkan-dev' ready; SOFTHSM2_CONF=$conf, PIN in $dir/user.pin"
