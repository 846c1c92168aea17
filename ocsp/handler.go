package ocsp

import (
	"bytes"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
)

// maxPOSTBody bounds an OCSP POST body; a single-request OCSP request is far smaller.
const maxPOSTBody = 2 << 10

// The unsigned error responses of RFC 6960 §4.2.1: OCSPResponse { responseStatus }.
var (
	respMalformed    = []byte{0x30, 0x03, 0x0a, 0x01, 0x01}
	respTryLater     = []byte{0x30, 0x03, 0x0a, 0x01, 0x03}
	respUnauthorized = []byte{0x30, 0x03, 0x0a, 0x01, 0x06}
)

var (
	ctOCSPResponse = []byte("application/ocsp-response")
	hdrCacheCtl    = []byte("Cache-Control")
	hdrETag        = []byte("ETag")
	hdrLastMod     = []byte("Last-Modified")
	hdrExpires     = []byte("Expires")
	hdrAllow       = []byte("Allow")
	hdrINM         = []byte("If-None-Match")
	hdrIMS         = []byte("If-Modified-Since")
	noStore        = []byte("no-store")
	allowed        = []byte("GET, HEAD, POST")
	cacheCtlTail   = []byte(", public, no-transform, must-revalidate")
)

// responder answers OCSP requests over HTTP (RFC 6960 and the RFC 5019 profile) from a
// Cache. Its hot path parses the CertID in place, looks the bytes up and writes them:
// it never signs, so an attacker's serial costs a map miss, not an HSM operation.
type responder struct {
	cache   *cache
	crls    crlSource // nil: no CRLs on this listener
	now     func() time.Time
	bufs    sync.Pool
	results results
}

// results counts requests by outcome; the counters are resolved once, not per request.
type results struct {
	good, revoked, unknown, unauthorized, malformed, notModified, badMethod, stale prometheus.Counter
}

// newResponder serves cache, and under /crl/ the CRLs crls finds (if not nil).
// reg, if not nil, receives the request counters.
func newResponder(cache *cache, crls crlSource, reg prometheus.Registerer) *responder {
	vec := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "inkan_ocsp_requests_total",
		Help: "OCSP requests answered, by result.",
	}, []string{"result"})
	if reg != nil {
		reg.MustRegister(vec)
	}
	return &responder{
		cache: cache,
		crls:  crls,
		now:   time.Now,
		bufs:  sync.Pool{New: func() any { b := make([]byte, 0, maxPOSTBody); return &b }},
		results: results{
			good:         vec.WithLabelValues("good"),
			revoked:      vec.WithLabelValues("revoked"),
			unknown:      vec.WithLabelValues("unknown"),
			unauthorized: vec.WithLabelValues("unauthorized"),
			malformed:    vec.WithLabelValues("malformed"),
			notModified:  vec.WithLabelValues("not_modified"),
			badMethod:    vec.WithLabelValues("method_not_allowed"),
			stale:        vec.WithLabelValues("try_later_stale"),
		},
	}
}

// ServeFastHTTP handles one request.
func (r *responder) ServeFastHTTP(ctx *fasthttp.RequestCtx) {
	switch {
	case ctx.IsGet() || ctx.IsHead():
		path := requestPath(ctx.Request.Header.RequestURI())
		if bytes.HasPrefix(path, crlPrefix) {
			r.serveCRL(ctx, path)
			return
		}
		bp := r.bufs.Get().(*[]byte)
		der, err := decodeGETPath((*bp)[:0], path)
		if err != nil {
			r.writeError(ctx, respMalformed, r.results.malformed)
		} else {
			r.answer(ctx, der)
		}
		*bp = der[:0]
		r.bufs.Put(bp)
	case ctx.IsPost():
		body := ctx.PostBody()
		if len(body) > maxPOSTBody {
			r.results.malformed.Inc()
			ctx.SetStatusCode(fasthttp.StatusRequestEntityTooLarge)
			return
		}
		r.answer(ctx, body)
	default:
		r.results.badMethod.Inc()
		ctx.Response.Header.SetCanonical(hdrAllow, allowed)
		ctx.SetStatusCode(fasthttp.StatusMethodNotAllowed)
	}
}

func (r *responder) answer(ctx *fasthttp.RequestCtx, der []byte) {
	id, err := parseRequest(der)
	if err == errMalformed {
		id, err = parseRequestStrict(der)
	}
	switch err {
	case nil:
	case errMalformed:
		r.writeError(ctx, respMalformed, r.results.malformed)
		return
	default: // a hash we hold no issuer under: we are not authorised for it
		r.writeError(ctx, respUnauthorized, r.results.unauthorized)
		return
	}
	resp := r.cache.lookup(id)
	if resp == nil {
		r.writeError(ctx, respUnauthorized, r.results.unauthorized)
		return
	}
	now := r.now()
	if !now.Before(resp.NextUpdate) {
		// Past its nextUpdate a response says nothing a relying party may
		// rely on: never serve it. The refresher has fallen behind or cannot
		// sign (no responder certificate, the HSM gone); the metric says so.
		r.writeError(ctx, respTryLater, r.results.stale)
		return
	}
	h := &ctx.Response.Header
	h.SetContentTypeBytes(ctOCSPResponse)
	var cc [80]byte
	b := append(cc[:0], "max-age="...)
	b = strconv.AppendInt(b, maxAge(resp.NextUpdate, now), 10)
	b = append(b, cacheCtlTail...)
	h.SetCanonical(hdrCacheCtl, b)
	h.SetCanonical(hdrETag, resp.etag)
	h.SetCanonical(hdrLastMod, resp.lastModified)
	h.SetCanonical(hdrExpires, resp.expires)
	if notModified(&ctx.Request.Header, resp.etag, resp.ThisUpdate) {
		r.results.notModified.Inc()
		ctx.SetStatusCode(fasthttp.StatusNotModified)
		return
	}
	switch resp.Status {
	case statusGood:
		r.results.good.Inc()
	case statusRevoked:
		r.results.revoked.Inc()
	default:
		r.results.unknown.Inc()
	}
	ctx.Response.SetBodyRaw(resp.DER)
}

// notModified applies RFC 9110 §13.2.2: If-None-Match, when sent, decides
// alone; otherwise If-Modified-Since at or after Last-Modified (the response's
// thisUpdate, to the second) means the client holds the current response.
// The server normalises the names of the request's headers as it reads them
// (NewServer leaves DisableHeaderNamesNormalizing off), so the canonical names
// find them whatever case the client sent; PeekBytes would copy and normalise
// our constant names again on every request.
func notModified(h *fasthttp.RequestHeader, etag []byte, lastModified time.Time) bool {
	if inm := h.PeekCanonical(hdrINM); len(inm) > 0 {
		return bytes.Equal(inm, etag)
	}
	ims := h.PeekCanonical(hdrIMS)
	if len(ims) == 0 {
		return false
	}
	t, err := fasthttp.ParseHTTPDate(ims)
	return err == nil && !t.Before(lastModified.Truncate(time.Second))
}

func (r *responder) writeError(ctx *fasthttp.RequestCtx, body []byte, c prometheus.Counter) {
	c.Inc()
	ctx.Response.Header.SetContentTypeBytes(ctOCSPResponse)
	ctx.Response.Header.SetCanonical(hdrCacheCtl, noStore)
	ctx.Response.SetBodyRaw(body)
}

// requestPath strips the scheme and host of an absolute-form request URI (what a
// client sends to a proxy), leaving the path with its original escaping.
func requestPath(uri []byte) []byte {
	if i := bytes.Index(uri, []byte("://")); i >= 0 && i < 8 {
		rest := uri[i+3:]
		if j := bytes.IndexByte(rest, '/'); j >= 0 {
			return rest[j:]
		}
		return nil
	}
	return uri
}

// maxAge is the whole seconds from now until nextUpdate, never negative.
func maxAge(nextUpdate, now time.Time) int64 {
	s := int64(nextUpdate.Sub(now) / time.Second)
	if s < 0 {
		return 0
	}
	return s
}

// NewServer is the OCSP listener's HTTP server: small buffers, no default headers the
// responder does not need, and a body limit above maxPOSTBody so that an oversized POST
// is answered 413 by the responder rather than cut off by the server. Request header
// names stay normalised: the responder looks If-None-Match and If-Modified-Since up by
// their canonical names.
func NewServer(h fasthttp.RequestHandler) *fasthttp.Server {
	return &fasthttp.Server{
		Handler:               h,
		Name:                  "inkan",
		MaxRequestBodySize:    16 << 10,
		ReadBufferSize:        16 << 10,
		ReadTimeout:           10 * time.Second,
		WriteTimeout:          10 * time.Second,
		IdleTimeout:           2 * time.Minute,
		NoDefaultServerHeader: true,
		NoDefaultContentType:  true,
	}
}
