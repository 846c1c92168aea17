package enroll

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// clientPrefix is how per-address limits aggregate addresses: one bucket per IPv4
// /V4 and per IPv6 /V6 network, because a client that holds many addresses holds
// them in one network (an IPv6 customer gets a /56 or a /48, a host behind a NAT
// pool a few IPv4 neighbours).
type clientPrefix struct {
	V4, V6 int
}

// defaultClientPrefix aggregates IPv4 /24 and IPv6 /56.
var defaultClientPrefix = clientPrefix{V4: 24, V6: 56}

func (p clientPrefix) check() error {
	if p.V4 < 1 || p.V4 > 32 || p.V6 < 1 || p.V6 > 128 {
		return fmt.Errorf("%w /%d, /%d: want IPv4 1-32 and IPv6 1-128", errClientPrefix, p.V4, p.V6)
	}
	return nil
}

// errClientPrefix: a client prefix out of range.
var errClientPrefix = errors.New("client prefix")

// clientKey is the key of the per-address limits for r: the network (Config.ClientPrefixV4, ClientPrefixV6)
// of the client's address. The address is the peer's, unless the peer is one of the
// trusted proxies: then it is the right-most address of X-Forwarded-For that is not
// a trusted proxy (the proxies append, so what is left of them a client may have
// written). A peer that is not a trusted proxy cannot choose its key by sending the
// header.
func (h *handler) clientKey(r *http.Request) string {
	addr, ok := peerAddr(r.RemoteAddr)
	if !ok {
		return r.RemoteAddr // not an IP (a test's pipe): one bucket per peer string
	}
	if h.trusted(addr) {
		if fwd, ok := forwardedFor(r.Header.Values("X-Forwarded-For"), h.trusted); ok {
			addr = fwd
		}
	}
	bits := h.cfg.ClientPrefixV6
	if addr.Is4() {
		bits = h.cfg.ClientPrefixV4
	}
	return netip.PrefixFrom(addr, bits).Masked().String()
}

func (h *handler) trusted(a netip.Addr) bool {
	for _, p := range h.cfg.TrustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// peerAddr is the IP of a RemoteAddr ("host:port"), IPv4-mapped IPv6 unmapped.
func peerAddr(remote string) (netip.Addr, bool) {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}, false
	}
	return a.Unmap().WithZone(""), true
}

// forwardedFor walks the X-Forwarded-For values from the right and returns the
// first address that is not trusted; false if the header holds none, or holds
// something that is not an address before one is found (then the peer is used).
func forwardedFor(values []string, trusted func(netip.Addr) bool) (netip.Addr, bool) {
	var hops []string
	for _, v := range values {
		hops = append(hops, strings.Split(v, ",")...)
	}
	for i := len(hops) - 1; i >= 0; i-- {
		a, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
		if err != nil {
			return netip.Addr{}, false
		}
		a = a.Unmap().WithZone("")
		if !trusted(a) {
			return a, true
		}
	}
	return netip.Addr{}, false
}
