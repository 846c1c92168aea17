// Command peer is the load generator of deploy/bench/peer.sh: it drives
// step-ca's /1.0/sign and inkan's enrollment API the same way (requests made
// before the clock starts, a fixed count, C clients over keep-alive
// connections) and prints one line per run. It also writes the files a
// step-ca needs (stepca-init), so that no step CLI and no network is needed.
//
//	peer ports K             K free TCP ports on 127.0.0.1, one a line
//	peer stepca-init -dir D -addr 127.0.0.1:P
//	peer stepca -dir D -url https://127.0.0.1:P -n N -c 64
//	peer inkan -url https://127.0.0.1:P[,https://…] -ca cluster-ca.pem \
//	     -cards tok1,tok2,… -pin-file card.pin -n N -c 64 [-full]
//
// Each run first sends a warm-up of C requests (not timed), then N timed ones,
// and prints: what=… n=… secs=… rate=…/s p50=…ms p99=…ms.
//
// It uses the main module's packages only (subscriber, enrollapi, hsm): a
// step-ca one-time token is an ES256 JWT, written here with the standard
// library, so the generator needs no JOSE dependency.
package main
