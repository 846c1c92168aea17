#!/usr/bin/env bash
# The dev appliance behind `make run`: state under ./.inkan-dev (created on first run,
# reused after), a SoftHSM token made for it with PINs in 0600 files, a one-node
# config written once (edit it freely; it is kept), then `inkan server` in the
# foreground. Ctrl-C stops the node; running this again resumes it from its state.
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
echo "dev token 'inkan-dev' ready; SOFTHSM2_CONF=$conf, PIN in $dir/user.pin"

# One node that bootstraps its own cluster, everything on 127.0.0.1 (ports 74xx).
cfg="$dir/node.yaml"
if [ ! -f "$cfg" ]; then
	cat >"$cfg" <<YAML
# inkan dev node, written by deploy/dev-run.sh on the first run (kept after:
# edit it freely). Every option is explained in deploy/examples/node.yaml.
data_dir: $dir/data
cluster:
  name: inkan-dev
  node_id: dev1
  bind: 127.0.0.1:7400
  bootstrap: true
api:
  listen: 127.0.0.1:7443
ocsp:
  listen: 127.0.0.1:7480
metrics:
  listen: 127.0.0.1:7490
hsm:
  module: $module
  token: inkan-dev
  pin_file: $dir/user.pin
log:
  level: info
  format: text
drain_timeout: 5s
YAML
	echo "wrote $cfg"
fi

echo "starting the node; Ctrl-C stops it. In another shell:"
echo "  $bin admin --config $cfg cluster status"
echo "  curl -s http://127.0.0.1:7490/readyz"
echo
exec "$bin" server --config "$cfg"
