package ocsp

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
	"go.etcd.io/bbolt"

	"github.com/inkan-pki/inkan/ca/crl"
)

// servedCRL is a published CRL as the responder serves it.
type servedCRL struct {
	DER        []byte
	Number     uint64
	ThisUpdate time.Time
	NextUpdate time.Time

	etag, lastModified, expires []byte
}

func newCRL(der []byte, m crl.Meta) *servedCRL {
	sum := sha256.Sum256(der)
	etag := append([]byte{'"'}, hex.AppendEncode(nil, sum[:16])...)
	return &servedCRL{
		DER: der, Number: m.Number, ThisUpdate: m.ThisUpdate, NextUpdate: m.NextUpdate,
		etag:         append(etag, '"'),
		lastModified: fasthttp.AppendHTTPDate(nil, m.ThisUpdate),
		expires:      fasthttp.AppendHTTPDate(nil, m.NextUpdate),
	}
}

// crlSource finds published CRLs. number 0 asks for the newest.
type crlSource interface {
	CRL(caID string, shard int, number uint64) (*servedCRL, bool, error)
}

// stateCRLs serves the CRLs in the cluster's replicated state (ca/crl's buckets) on
// this node. The newest CRL of each shard is kept ready with its headers; a request
// costs a read of the shard's latest number, and the bytes are rebuilt only when a
// newer CRL has been published. Old CRLs are read from state when asked for.
type stateCRLs struct {
	view func(func(*bbolt.Tx) error) error

	mu     sync.Mutex
	latest map[crlKey]*servedCRL
}

type crlKey struct {
	ca    string
	shard int
}

// newStateCRLs serves from view (cluster.Cluster.View).
func newStateCRLs(view func(func(*bbolt.Tx) error) error) *stateCRLs {
	return &stateCRLs{view: view, latest: map[crlKey]*servedCRL{}}
}

// CRL implements CRLSource.
func (s *stateCRLs) CRL(caID string, shard int, number uint64) (*servedCRL, bool, error) {
	k := crlKey{caID, shard}
	var out *servedCRL
	err := s.view(func(tx *bbolt.Tx) error {
		var m crl.Meta
		var ok bool
		var err error
		if number == 0 {
			m, ok, err = crl.Read(tx).Latest(caID, shard)
		} else {
			m, ok, err = crl.Read(tx).Get(caID, shard, number)
		}
		if err != nil || !ok {
			return err
		}
		if number == 0 {
			s.mu.Lock()
			cur := s.latest[k]
			s.mu.Unlock()
			if cur != nil && cur.Number == m.Number {
				out = cur
				return nil
			}
		}
		der, err := crl.Read(tx).DER(m)
		if err != nil {
			return err
		}
		out = newCRL(der, m)
		if number == 0 {
			s.mu.Lock()
			s.latest[k] = out
			s.mu.Unlock()
		}
		return nil
	})
	return out, out != nil, err
}

var (
	crlPrefix    = []byte("/crl/")
	ctPKIXCRL    = []byte("application/pkix-crl")
	immutable    = []byte("public, max-age=31536000, immutable")
	crlSuffix    = []byte(".crl")
	fullShardID  = []byte("full")
	deltaShardID = []byte("delta")
)

// parseCRLPath reads /crl/<ca-id>/<shard>.crl and /crl/<ca-id>/<shard>/<number>.crl,
// where shard is a decimal number, "full" or "delta".
func parseCRLPath(path []byte) (ca string, shard int, number uint64, ok bool) {
	rest, found := bytes.CutPrefix(path, crlPrefix)
	if !found {
		return "", 0, 0, false
	}
	rest, found = bytes.CutSuffix(rest, crlSuffix)
	if !found {
		return "", 0, 0, false
	}
	parts := bytes.Split(rest, []byte("/"))
	if len(parts) != 2 && len(parts) != 3 {
		return "", 0, 0, false
	}
	for _, p := range parts {
		if len(p) == 0 || len(p) > 64 {
			return "", 0, 0, false
		}
	}
	switch {
	case bytes.Equal(parts[1], fullShardID):
		shard = crl.Full
	case bytes.Equal(parts[1], deltaShardID):
		shard = crl.Delta
	default:
		n, err := strconv.ParseUint(string(parts[1]), 10, 16)
		if err != nil {
			return "", 0, 0, false
		}
		shard = int(n)
	}
	if len(parts) == 3 {
		n, err := strconv.ParseUint(string(parts[2]), 10, 64)
		if err != nil || n == 0 {
			return "", 0, 0, false
		}
		number = n
	}
	return string(parts[0]), shard, number, true
}

// serveCRL answers a CRL request: the newest with caching headers until its
// nextUpdate, an old one by number as immutable evidence.
func (r *responder) serveCRL(ctx *fasthttp.RequestCtx, path []byte) {
	ca, shard, number, ok := parseCRLPath(path)
	if !ok || r.crls == nil {
		ctx.SetStatusCode(fasthttp.StatusNotFound)
		return
	}
	c, found, err := r.crls.CRL(ca, shard, number)
	switch {
	case err != nil:
		ctx.SetStatusCode(fasthttp.StatusServiceUnavailable)
		return
	case !found:
		ctx.SetStatusCode(fasthttp.StatusNotFound)
		return
	}
	h := &ctx.Response.Header
	h.SetContentTypeBytes(ctPKIXCRL)
	if number != 0 {
		h.SetCanonical(hdrCacheCtl, immutable)
	} else {
		var cc [80]byte
		b := append(cc[:0], "max-age="...)
		b = strconv.AppendInt(b, maxAge(c.NextUpdate, r.now()), 10)
		b = append(b, cacheCtlTail...)
		h.SetCanonical(hdrCacheCtl, b)
		h.SetCanonical(hdrExpires, c.expires)
	}
	h.SetCanonical(hdrETag, c.etag)
	h.SetCanonical(hdrLastMod, c.lastModified)
	if notModified(&ctx.Request.Header, c.etag, c.ThisUpdate) {
		ctx.SetStatusCode(fasthttp.StatusNotModified)
		return
	}
	if ctx.IsHead() {
		ctx.Response.SkipBody = true
	}
	ctx.Response.SetBodyRaw(c.DER)
}
