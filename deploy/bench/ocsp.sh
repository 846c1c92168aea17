#!/usr/bin/env bash
# OCSP serving benchmark (issue 6). One run measures, with the same core pinning
# (server on core 0, wrk on core 1, keep-alive):
#   - inkan's responder (ocsp.Responder on ocsp.NewServer, 100,000 cached responses),
#   - nginx (1 worker) serving the identical response bytes as a static file,
#   - openssl ocsp as a responder (signs per request, no keep-alive; inside its own
#     network namespace, since it cannot bind to one address),
# for GET and POST (wrk with a Lua script), at 64 and 256 connections, and prints
# requests/s, p50/p99 and, for each, the ratio of its requests/s and of its p99 to
# nginx's in the same round. ROUNDS=n repeats the nginx/inkan pairs n times,
# alternating (a p99 on a shared machine moves from one run to the next).
#   deploy/bench/ocsp.sh            DUR=10s CONNS="64 256" ROUNDS=1 to change
set -euo pipefail
cd "$(dirname "$0")/../.."
deploy/install-deps.sh --bench

DUR=${DUR:-10s}
CONNS=${CONNS:-"64 256"}
ROUNDS=${ROUNDS:-1}
SRV_CORE=0
CLI_CORE=1
work=$(mktemp -d /tmp/inkan-bench-ocsp.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

go build -o "$work/ocspserve" ./deploy/bench/ocspserve
files="$work/files"

waitport() { for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; return 1; }

taskset -c $SRV_CORE "$work/ocspserve" -listen 127.0.0.1:18080 -out "$files" 2>"$work/ocspserve.log" &
pids+=($!)
waitport 18080

cat >"$work/nginx.conf" <<NGX
worker_processes 1;
daemon off;
master_process off;
pid $work/nginx.pid;
error_log $work/nginx.err warn;
events { worker_connections 4096; }
http {
	access_log off;
	keepalive_requests 1000000;
	sendfile on;
	tcp_nopush on;
	open_file_cache max=16 inactive=1h;
	open_file_cache_valid 1h;
	server {
		listen 127.0.0.1:18090;
		root $files;
		location / {
			default_type application/ocsp-response;
			rewrite ^ /resp.der break;
			# The static module answers POST with 405; serve the file for it as well.
			error_page 405 =200 /resp.der;
			expires 4d;
			add_header Cache-Control "public, no-transform, must-revalidate";
		}
	}
}
NGX
taskset -c $SRV_CORE nginx -c "$work/nginx.conf" -e "$work/nginx.err" &
pids+=($!)
waitport 18090

cat >"$work/post.lua" <<'LUA'
local f = assert(io.open(os.getenv("REQ_DER"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*all")
wrk.headers["Content-Type"] = "application/ocsp-request"
f:close()
LUA
export REQ_DER="$files/req.der"
b64=$(base64 -w0 "$files/req.der")

# Sanity: every server gives the same bytes for GET and POST before anything is timed.
for port in 18080 18090; do
	curl -sf "http://127.0.0.1:$port/$b64" -o "$work/get.$port"
	curl -sf -H 'Content-Type: application/ocsp-request' --data-binary @"$files/req.der" "http://127.0.0.1:$port/" -o "$work/post.$port"
	cmp -s "$work/get.$port" "$files/resp.der" && cmp -s "$work/post.$port" "$files/resp.der" ||
		{ echo "port $port does not serve the response bytes" >&2; exit 1; }
done

results="$work/results"
: >"$results"
# run NAME METHOD CONNS URL [netns-prefix...]; $round is the round.
round=1
run() {
	local name=$1 method=$2 conns=$3 url=$4
	shift 4
	local script=()
	[ "$method" = POST ] && script=(-s "$work/post.lua")
	local out
	out=$("$@" taskset -c $CLI_CORE wrk -t1 -c"$conns" -d"$DUR" --latency "${script[@]}" "$url" 2>&1)
	local rps p50 p99 errs
	rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
	p50=$(awk '$1=="50%" {print $2}' <<<"$out")
	p99=$(awk '$1=="99%" {print $2}' <<<"$out")
	errs=$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out" | tr '\n' ' ')
	printf '%-8s %-4s %4s %12s %10s %10s %5s %s\n' "$name" "$method" "$conns" "$rps" "$p50" "$p99" "$round" "$errs" | tee -a "$results"
}

printf '%-8s %-4s %4s %12s %10s %10s %5s\n' server meth conn 'req/s' p50 p99 round
for round in $(seq "$ROUNDS"); do
	echo "# round $round, $(date -u +%H:%M:%S) UTC, load $(cut -d' ' -f1-3 /proc/loadavg)"
	for conns in $CONNS; do
		for method in GET POST; do
			url_path=/
			[ "$method" = GET ] && url_path="/$b64"
			run nginx "$method" "$conns" "http://127.0.0.1:18090$url_path"
			run inkan "$method" "$conns" "http://127.0.0.1:18080$url_path"
		done
	done
done
round=1

# openssl ocsp as a responder, in a network namespace of its own (it cannot bind to
# one address) with wrk beside it. wrk opens and closes a probe connection before it
# starts, on which openssl ocsp 3.0 spins forever; ocspserve -proxy-to (on the client's
# core) forwards only connections that send something.
if command -v unshare >/dev/null && unshare -n true 2>/dev/null; then
	cat >"$work/openssl-run.sh" <<SH
set -e
ip link set lo up
cd "$files"
taskset -c $SRV_CORE openssl ocsp -index index.txt -port 18100 -rsigner ca.pem -rkey ca.key -CA ca.pem -ignore_err >/dev/null 2>&1 &
taskset -c $CLI_CORE "$work/ocspserve" -listen 127.0.0.1:18101 -proxy-to 127.0.0.1:18100 2>/dev/null &
sleep 1
SH
	for conns in $CONNS; do
		for method in GET POST; do
			url_path=/
			[ "$method" = GET ] && url_path="/$b64"
			out=$(unshare -n bash -c "$(cat "$work/openssl-run.sh"); REQ_DER='$REQ_DER' taskset -c $CLI_CORE wrk -t1 -c$conns -d$DUR --latency $([ "$method" = POST ] && echo "-s $work/post.lua") 'http://127.0.0.1:18101$url_path'; kill %1 %2" 2>&1) || true
			rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
			p50=$(awk '$1=="50%" {print $2}' <<<"$out")
			p99=$(awk '$1=="99%" {print $2}' <<<"$out")
			errs=$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out" | tr '\n' ' ')
			printf '%-8s %-4s %4s %12s %10s %10s %5s %s\n' openssl "$method" "$conns" "$rps" "$p50" "$p99" 1 "$errs" | tee -a "$results"
		done
	done
else
	echo "openssl ocsp: skipped (unshare -n not permitted here)"
fi

echo
echo "ratios to nginx's requests/s and p99 in the same round:"
awk '
	function ms(v) { # wrk prints 812.00us, 5.40ms or 1.02s
		if (v ~ /us$/) return (v + 0) / 1000
		if (v ~ /ms$/) return v + 0
		if (v ~ /s$/) return (v + 0) * 1000
		return 0
	}
	{ key=$2" "$3" "$7; rps[$1" "key]=$4; p99[$1" "key]=ms($6) }
	END {
		for (k in rps) { split(k, a, " "); n="nginx "a[2]" "a[3]" "a[4]
			if (a[1] != "nginx" && rps[n] > 0 && p99[n] > 0)
				printf "  %-8s %-4s %4s round %-3s  req/s %.3f  p99 %.3f\n", a[1], a[2], a[3], a[4], rps[k] / rps[n], p99[k] / p99[n] }
	}' "$results" | sort
