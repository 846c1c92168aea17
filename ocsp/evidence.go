package ocsp

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strconv"
	"time"

	xocsp "golang.org/x/crypto/ocsp"

	"github.com/valyala/fasthttp"
	"go.etcd.io/bbolt"

	"github.com/inkan-pki/inkan/ca/crl"
	"github.com/inkan-pki/inkan/certserial"
)

// history answers, on the OCSP listener of every node, what a certificate's
// status was at a past time, from the replicated state:
//
//	GET /status/<ca-id>/<serial>?at=<RFC 3339>    JSON, with the CRLs that prove it
//	GET /evidence/<ca-id>/<serial>?at=<RFC 3339>  CMS SignedData (RFC 5652, RFC 5940)
//
// Errors are problem+json (RFC 9457) of type HistoryProblemBase + a name.
// docs/long-term.md describes both answers.
type history struct {
	view  func(func(*bbolt.Tx) error) error
	cache *cache
	now   func() time.Time
	// settled says whether the pre-signer has signed what the state needs
	// since the start (Health.Reconciled): until then, a response missing
	// from the cache may be one still to be signed, not one no node holds.
	settled func() bool
}

// historyProblemBase prefixes the problem types of /status and /evidence.
const historyProblemBase = "urn:inkan:problem:evidence:"

// newHistory answers from view (cluster.Cluster.View); the evidence bundle
// carries cache's current OCSP response for the certificate, and is refused
// (ocsp-signing) while settled is false and the cache holds none yet.
func newHistory(view func(func(*bbolt.Tx) error) error, cache *cache, settled func() bool) *history {
	return &history{view: view, cache: cache, now: time.Now, settled: settled}
}

var (
	statusPrefix   = []byte("/status/")
	evidencePrefix = []byte("/evidence/")
)

// Wrap serves /status/ and /evidence/ and hands every other request to next.
func (h *history) Wrap(next fasthttp.RequestHandler) fasthttp.RequestHandler {
	return func(ctx *fasthttp.RequestCtx) {
		p := ctx.Path()
		switch {
		case bytes.HasPrefix(p, statusPrefix):
			h.serve(ctx, p[len(statusPrefix):], false)
		case bytes.HasPrefix(p, evidencePrefix):
			h.serve(ctx, p[len(evidencePrefix):], true)
		default:
			next(ctx)
		}
	}
}

// historyProblem is a problem type of /status and /evidence.
type historyProblem struct {
	name   string
	title  string
	status int
}

var (
	probBadRequest    = historyProblem{"bad-request", "The request is not a status question", fasthttp.StatusBadRequest}
	probBadSerial     = historyProblem{"bad-serial", "The serial is not a certificate serial number", fasthttp.StatusBadRequest}
	probBadTime       = historyProblem{"bad-time", "The at parameter is not an RFC 3339 time", fasthttp.StatusBadRequest}
	probFutureTime    = historyProblem{"future-time", "The time asked about has not come yet", fasthttp.StatusBadRequest}
	probUnknownCA     = historyProblem{"unknown-ca", "No CA certificate of this cluster has that ID", fasthttp.StatusNotFound}
	probUnknownSerial = historyProblem{"unknown-serial", "The CA issued no certificate with that serial", fasthttp.StatusNotFound}
	probNotIssuedAt   = historyProblem{"not-issued-at", "The certificate did not exist yet at that time", fasthttp.StatusNotFound}
	probNotAllowed    = historyProblem{"method-not-allowed", "Only GET and HEAD are answered", fasthttp.StatusMethodNotAllowed}
	probUnavailable   = historyProblem{"unavailable", "The node could not read its state", fasthttp.StatusServiceUnavailable}
	probNotArchived   = historyProblem{"crl-not-archived", "This node's CRL archive lacks a CRL the answer needs", fasthttp.StatusServiceUnavailable}
	probSigning       = historyProblem{"ocsp-signing", "This node is still signing its OCSP responses", fasthttp.StatusServiceUnavailable}
)

// The forms of the evidence bundle: cms (the default) carries the OCSP
// response as RFC 5940 revocation information; pkcs7 leaves it out, so that
// PKCS #7 readers, which know only CRLs there (openssl pkcs7), read the rest.
const (
	formCMS   = "cms"
	formPKCS7 = "pkcs7"
)

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// maxSerialText bounds the serial in the path (a 20-byte serial in hex with colons).
const maxSerialText = 64

func (h *history) serve(ctx *fasthttp.RequestCtx, rest []byte, evidence bool) {
	if !ctx.IsGet() && !ctx.IsHead() {
		ctx.Response.Header.Set("Allow", "GET, HEAD")
		writeProblem(ctx, probNotAllowed, "")
		return
	}
	caID, serialText, ok := bytes.Cut(rest, []byte("/"))
	if !ok || len(caID) == 0 || len(caID) > 64 || bytes.ContainsRune(serialText, '/') {
		writeProblem(ctx, probBadRequest, "the path is /status/<ca-id>/<serial> or /evidence/<ca-id>/<serial>")
		return
	}
	if len(serialText) > maxSerialText {
		writeProblem(ctx, probBadSerial, "the serial is too long")
		return
	}
	serial, err := certserial.Parse(string(serialText))
	if err != nil || serial.Sign() <= 0 {
		writeProblem(ctx, probBadSerial, "the serial is hex, as inkan and openssl print it")
		return
	}
	args := ctx.QueryArgs()
	form := string(args.Peek("form"))
	if !args.Has("at") || args.Len() != 1+btoi(args.Has("form")) || (form != "" && form != formCMS && form != formPKCS7) || (args.Has("form") && !evidence) {
		writeProblem(ctx, probBadRequest, "the query is at=<RFC 3339 time>, and for /evidence optionally form=cms or form=pkcs7")
		return
	}
	at, err := time.Parse(time.RFC3339Nano, string(args.Peek("at")))
	if err != nil {
		writeProblem(ctx, probBadTime, "at is an RFC 3339 time, such as 2026-12-07T10:00:00Z")
		return
	}
	var s *statusAt
	var ocspDER []byte
	err = h.view(func(tx *bbolt.Tx) error {
		var err error
		s, err = lookupStatusAt(tx, string(caID), serial, at, h.now())
		return err
	})
	switch {
	case errors.Is(err, errFutureTime):
		writeProblem(ctx, probFutureTime, "at must not be after the node's clock")
		return
	case errors.Is(err, errUnknownCA):
		writeProblem(ctx, probUnknownCA, "")
		return
	case errors.Is(err, errUnknownSerial):
		writeProblem(ctx, probUnknownSerial, "")
		return
	case errors.Is(err, crl.ErrNotArchived):
		writeProblem(ctx, probNotArchived, "the node is fetching it from its peers; retry, or ask another node")
		return
	case err != nil:
		writeProblem(ctx, probUnavailable, "")
		return
	}
	if !evidence {
		h.writeStatus(ctx, s)
		return
	}
	switch {
	case s.cert == nil:
		writeProblem(ctx, probNotIssuedAt, "the certificate was never issued: its intent was resolved as revoked")
		return
	case s.status == atUnknown:
		writeProblem(ctx, probNotIssuedAt, "the certificate was issued at "+s.issued().UTC().Format(time.RFC3339))
		return
	}
	if form != formPKCS7 {
		if ocspDER, err = h.ocspFor(s); err != nil {
			writeProblem(ctx, probSigning, "the bundle's OCSP response is not signed yet on this node (it has just started or joined): retry, or ask another node")
			return
		}
	}
	der, err := s.bundle(ocspDER).marshal()
	if err != nil {
		writeProblem(ctx, probUnavailable, "")
		return
	}
	hd := &ctx.Response.Header
	hd.SetContentType("application/pkcs7-mime; smime-type=certs-only")
	hd.Set("Content-Disposition", `attachment; filename="evidence-`+certserial.Format(serial)+`.p7b"`)
	hd.Set("Cache-Control", "public, max-age=60")
	if ctx.IsHead() {
		ctx.Response.SkipBody = true
	}
	ctx.SetBody(der)
}

// errSigning: the node holds no OCSP response for the certificate yet and has
// not signed what its state needs since it started, so the bundle would lack
// one that the node is about to serve.
var errSigning = errors.New("ocsp: the node is still signing its responses")

// ocspFor is the OCSP response the evidence bundle carries: the one this node
// serves for the certificate now. Without one it is nil once the node has
// signed what its state needs (a CA no node answers for any more), and
// errSigning before: a bundle is never left without the response only because
// the node asked has just started or joined.
func (h *history) ocspFor(s *statusAt) ([]byte, error) {
	if der := h.currentResponse(s); der != nil {
		return der, nil
	}
	if !h.settled() {
		return nil, errSigning
	}
	return nil, nil
}

// currentResponse is the OCSP response this node serves for the certificate
// now, if it holds one whose nextUpdate has not passed.
func (h *history) currentResponse(s *statusAt) []byte {
	if h.cache == nil {
		return nil
	}
	r := h.cache.Get(s.issuer.ID, crypto.SHA1, s.serial.Bytes())
	if r == nil || !h.now().Before(r.NextUpdate) {
		return nil
	}
	return r.DER
}

// bundle gathers the evidence: the certificate, its CA's certificate and chain,
// the responder's certificate, the shard CRLs around T and the OCSP response.
func (s *statusAt) bundle(ocspDER []byte) *bundle {
	b := &bundle{certs: [][]byte{s.cert.Raw, s.issuer.Cert.Raw}}
	b.certs = append(b.certs, s.issuer.Chain...)
	if s.hasCurrent {
		b.crls = append(b.crls, s.currentDER)
	}
	if s.hasNext {
		b.crls = append(b.crls, s.nextDER)
	}
	if ocspDER != nil {
		b.ocsp = append(b.ocsp, ocspDER)
		if r, err := xocsp.ParseResponse(ocspDER, nil); err == nil && r.Certificate != nil {
			b.certs = append(b.certs, r.Certificate.Raw)
		}
	}
	return b
}

// statusAnswer is /status's JSON.
type statusAnswer struct {
	CA     string    `json:"ca"`
	Serial string    `json:"serial"`
	At     time.Time `json:"at"`
	// Status at T: good, revoked, held (certificateHold) or unknown (not
	// issued yet at T).
	Status     string     `json:"status"`
	Reason     string     `json:"reason,omitempty"`
	ReasonCode *int       `json:"reason_code,omitempty"`
	RevokedAt  *time.Time `json:"revoked_at,omitempty"`
	// Expired: T is at or after the certificate's notAfter.
	Expired   bool       `json:"expired"`
	IssuedAt  time.Time  `json:"issued_at"`
	NotBefore *time.Time `json:"not_before,omitempty"`
	NotAfter  time.Time  `json:"not_after"`
	// Revocation is the certificate's revocation or hold as it stands now,
	// also when made after T.
	Revocation *revocationNow `json:"revocation,omitempty"`
	// CRLAtT is the shard's CRL current at T, CRLAfterT the first published
	// after T: the CA-signed proof.
	Shard     int     `json:"shard"`
	CRLAtT    *crlRef `json:"crl_at_t,omitempty"`
	CRLAfterT *crlRef `json:"crl_after_t,omitempty"`
	// Source says where a hold or revocation at T was read: "record" (the
	// certificate's record) or "crl" (the CRL current at T).
	Source   string `json:"source,omitempty"`
	Evidence string `json:"evidence,omitempty"`
}

type revocationNow struct {
	Status     string    `json:"status"`
	Time       time.Time `json:"time"`
	Reason     string    `json:"reason"`
	ReasonCode int       `json:"reason_code"`
}

type crlRef struct {
	Path       string    `json:"path"`
	Number     uint64    `json:"number"`
	ThisUpdate time.Time `json:"this_update"`
	NextUpdate time.Time `json:"next_update"`
	SHA256     string    `json:"sha256"`
	DER        []byte    `json:"der"`
}

func newCRLRef(caID string, shard int, number uint64, thisUpdate, nextUpdate time.Time, der []byte) *crlRef {
	sum := sha256.Sum256(der)
	name := strconv.Itoa(shard)
	return &crlRef{
		Path:   "/crl/" + caID + "/" + name + "/" + strconv.FormatUint(number, 10) + ".crl",
		Number: number, ThisUpdate: thisUpdate.UTC(), NextUpdate: nextUpdate.UTC(),
		SHA256: hex.EncodeToString(sum[:]), DER: der,
	}
}

func (s *statusAt) answer() statusAnswer {
	a := statusAnswer{
		CA: s.issuer.ID, Serial: certserial.Format(s.serial), At: s.at.UTC(), Status: s.status,
		Expired: s.expired(), IssuedAt: s.issued().UTC(), NotAfter: s.rec.NotAfter.UTC(), Shard: s.shard,
	}
	if s.cert != nil {
		nb := s.cert.NotBefore.UTC()
		a.NotBefore = &nb
	}
	if s.status == atRevoked || s.status == atHeld {
		code, at := s.reason, s.revokedAt.UTC()
		a.Reason, a.ReasonCode, a.RevokedAt = reasonName(code), &code, &at
		a.Source = "record"
		if s.fromCRL {
			a.Source = "crl"
		}
	}
	if st := s.rec.Status.String(); st == atRevoked || st == atHeld {
		a.Revocation = &revocationNow{Status: st, Time: s.rec.RevokedAt.UTC(), Reason: reasonName(int(s.rec.Reason)), ReasonCode: int(s.rec.Reason)}
	}
	if s.hasCurrent {
		a.CRLAtT = newCRLRef(s.issuer.ID, s.shard, s.current.Number, s.current.ThisUpdate, s.current.NextUpdate, s.currentDER)
	}
	if s.hasNext {
		a.CRLAfterT = newCRLRef(s.issuer.ID, s.shard, s.next.Number, s.next.ThisUpdate, s.next.NextUpdate, s.nextDER)
	}
	if s.status != atUnknown && s.cert != nil {
		a.Evidence = "/evidence/" + s.issuer.ID + "/" + a.Serial + "?at=" + s.at.UTC().Format(time.RFC3339Nano)
	}
	return a
}

func (h *history) writeStatus(ctx *fasthttp.RequestCtx, s *statusAt) {
	body, err := json.Marshal(s.answer())
	if err != nil {
		writeProblem(ctx, probUnavailable, "")
		return
	}
	ctx.SetContentType("application/json")
	ctx.Response.Header.Set("Cache-Control", "public, max-age=60")
	if ctx.IsHead() {
		ctx.Response.SkipBody = true
	}
	ctx.SetBody(append(body, '\n'))
}

type problemBody struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail,omitempty"`
}

func writeProblem(ctx *fasthttp.RequestCtx, p historyProblem, detail string) {
	body, _ := json.Marshal(problemBody{Type: historyProblemBase + p.name, Title: p.title, Status: p.status, Detail: detail})
	ctx.SetStatusCode(p.status)
	ctx.SetContentType("application/problem+json")
	ctx.Response.Header.Set("Cache-Control", "no-store")
	ctx.SetBody(append(body, '\n'))
}
