package enroll

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.etcd.io/bbolt"

	"github.com/inkan-pki/inkan/ca"
	"github.com/inkan-pki/inkan/certserial"
	"github.com/inkan-pki/inkan/jpki"
	"github.com/inkan-pki/inkan/policies"
)

// The API's paths, relative to the listener's root.
const (
	PathChallenge = "/v1/enroll/challenge"
	PathEnroll    = "/v1/enroll"
)

// Limits of the API.
const (
	// MaxBodyBytes bounds a request body; a larger one is refused with body-too-large.
	MaxBodyBytes = 64 << 10
	// MaxProofLifetime bounds exp − iat of a proof.
	MaxProofLifetime = 5 * time.Minute
	// DefaultClockSkew is how far a client's clock may be ahead (iat) or behind (exp).
	DefaultClockSkew = time.Minute
)

// Config configures the enrollment API of a node.
type Config struct {
	// Audience is the URL clients post proofs to, exactly as the proof's aud must
	// name it: "https://ca.example.jp/v1/enroll".
	Audience string
	// Verifier checks JPKI chains, validity, key usage, policy and revocation.
	Verifier *jpki.Verifier
	// Cluster is read for the CA's state: certificates, person records, used
	// nonces (register NonceHandler on every node, for the previous release's).
	Cluster Replicated
	// Policy decides what is issued; Issuer issues it.
	Policy Policy
	Issuer Issuer
	// Rebinder, if set, has the API serve PathRebind (the node's *ca.Authority);
	// Policy must then implement RebindPolicy too (ProfilePolicy does).
	Rebinder Rebinder
	// LinkKey keys the hashes that tie a certificate to the JPKI certificate, the
	// name-and-birth and basic-4 hashes, and the nonces' MAC (at least
	// jpki.MinHashKeyLen bytes): a cluster secret, the same on every node.
	LinkKey []byte
	// ProblemBase prefixes the problem type names (DefaultProblemBase if empty), e.g.
	// "https://ca.example.jp/problems/" to point clients at documentation.
	ProblemBase string
	// ClockSkew tolerated in iat and exp (DefaultClockSkew if 0).
	ClockSkew time.Duration
	// RateLimit bounds requests per client network on this node (every endpoint
	// together); the zero value means DefaultRateLimit, a negative Rate none.
	RateLimit RateLimit
	// ClientPrefix is how addresses aggregate into the networks per-address limits
	// count (this API's and the profiles'); the zero value means
	// DefaultClientPrefix.
	ClientPrefix ClientPrefix
	// TrustedProxies are the peers whose X-Forwarded-For names the client (a load
	// balancer in front of the nodes); from any other peer the header is ignored.
	TrustedProxies []netip.Prefix
	// Now is the clock (time.Now if nil).
	Now func() time.Time
	// Registerer gets the metrics if set.
	Registerer prometheus.Registerer
	// Logger (slog.Default() if nil) gets refusals by problem type and issuance
	// failures; never personal data, a proof or a nonce.
	Logger *slog.Logger
}

// Handler is the enrollment API: an http.Handler serving PathChallenge and PathEnroll
// that a node mounts on its HTTPS API listener. Safe for concurrent use.
type Handler struct {
	cfg      Config
	source   string // the kind of the verifier's revocation source
	nonces   nonceCodec
	limiter  *limiter
	log      *slog.Logger
	refusals *prometheus.CounterVec
	issued   prometheus.Counter
	mux      *http.ServeMux
	inflight inflight
}

// NewHandler checks cfg and returns the API.
func NewHandler(cfg Config) (*Handler, error) {
	var errs []error
	u, err := url.Parse(cfg.Audience)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		errs = append(errs, fmt.Errorf("audience %q: not an https URL without query or fragment", cfg.Audience))
	}
	if cfg.Verifier == nil {
		errs = append(errs, errors.New("no JPKI verifier"))
	}
	if cfg.Cluster == nil {
		errs = append(errs, errors.New("no cluster"))
	}
	if cfg.Policy == nil {
		errs = append(errs, errors.New("no policy"))
	}
	if cfg.Issuer == nil {
		errs = append(errs, errors.New("no issuer"))
	}
	if _, ok := cfg.Policy.(RebindPolicy); cfg.Rebinder != nil && !ok {
		errs = append(errs, errors.New("a rebinder, but the policy does not re-bind"))
	}
	if len(cfg.LinkKey) < jpki.MinHashKeyLen {
		errs = append(errs, fmt.Errorf("link key shorter than %d bytes", jpki.MinHashKeyLen))
	}
	if cfg.ClockSkew < 0 || cfg.ClockSkew > MaxProofLifetime {
		errs = append(errs, fmt.Errorf("clock skew %v out of range (0 to %v)", cfg.ClockSkew, MaxProofLifetime))
	}
	if cfg.ClientPrefix == (ClientPrefix{}) {
		cfg.ClientPrefix = DefaultClientPrefix
	}
	if err := cfg.ClientPrefix.check(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("enroll: config: %w", err)
	}
	if cfg.ProblemBase == "" {
		cfg.ProblemBase = DefaultProblemBase
	}
	if cfg.ClockSkew == 0 {
		cfg.ClockSkew = DefaultClockSkew
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	h := &Handler{
		cfg:     cfg,
		source:  sourceKind(cfg.Verifier.RevocationSource()),
		nonces:  newNonceCodec(cfg.LinkKey),
		limiter: newLimiter(cfg.RateLimit),
		log:     cfg.Logger.With("component", "enroll"),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "inkan_enroll_refusals_total",
			Help: "Enrollment requests refused, by problem type.",
		}, []string{"type"}),
		issued: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "inkan_enroll_issued_total",
			Help: "Certificates issued through the enrollment API.",
		}),
	}
	for _, p := range problemTypes {
		h.refusals.WithLabelValues(p.name)
	}
	if cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{h.refusals, h.issued} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("enroll: metrics: %w", err)
			}
		}
	}
	h.mux = http.NewServeMux()
	h.mux.HandleFunc("POST "+PathChallenge, h.serveChallenge)
	h.mux.HandleFunc("POST "+PathEnroll, h.serveEnroll)
	if cfg.Rebinder != nil {
		h.mux.HandleFunc("POST "+PathRebind, h.serveRebind)
	}
	return h, nil
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.mux.ServeHTTP(w, r) }

// ChallengeResponse is the body of a successful challenge request.
type ChallengeResponse struct {
	// Nonce is base64url (no padding) of NonceLen bytes: the proof's nonce claim,
	// as given. Its content is the server's business (nonce.go).
	Nonce string `json:"nonce"`
	// Expires is when the nonce stops being redeemable.
	Expires time.Time `json:"expires"`
}

// Request is the body of an enrollment request.
type Request struct {
	// Proof is the compact JWS (RS256, x5c = the JPKI signature certificate).
	Proof string `json:"proof"`
	// CSR is base64url (no padding) of the DER PKCS#10 request.
	CSR string `json:"csr"`
	// Profile asks for a profile; empty means the policy's default.
	Profile string `json:"profile,omitempty"`
}

// Response is the body of a successful enrollment.
type Response struct {
	// Serial is the certificate's serial number in certserial's printed form.
	Serial string `json:"serial"`
	// Chain is the certificate and then the CAs above it, each standard base64 of
	// DER (as x5c is).
	Chain []string `json:"chain"`
	// Profile is the profile the certificate was issued under.
	Profile string `json:"profile"`
}

// serveChallenge hands out a nonce. It writes nothing: the nonce authenticates
// itself, and its use is recorded with what it is used for.
func (h *Handler) serveChallenge(w http.ResponseWriter, r *http.Request) {
	if !h.limiter.allow(h.clientKey(r), h.cfg.Now()) {
		h.refuse(w, ErrRateLimited)
		return
	}
	if _, err := readBody(w, r); err != nil {
		h.refuse(w, err)
		return
	}
	nonce, expires, err := h.nonces.make(h.cfg.Now())
	if err != nil {
		h.log.Error("enroll: challenge not made", "err", err)
		h.refuseAs(w, probUnavailable, probUnavailable.title)
		return
	}
	writeJSON(w, http.StatusCreated, ChallengeResponse{Nonce: base64.RawURLEncoding.EncodeToString(nonce), Expires: expires})
}

// intake admits a POST of the API: the client's request rate, the media type,
// the body within MaxBodyBytes. It refuses and returns false otherwise.
func (h *Handler) intake(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	if !h.limiter.allow(h.clientKey(r), h.cfg.Now()) {
		h.refuse(w, ErrRateLimited)
		return nil, false
	}
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
			h.refuseAs(w, probMediaType, "send the request as application/json")
			return nil, false
		}
	}
	body, err := readBody(w, r)
	if err != nil {
		h.refuse(w, err)
		return nil, false
	}
	return body, true
}

func (h *Handler) serveEnroll(w http.ResponseWriter, r *http.Request) {
	body, ok := h.intake(w, r)
	if !ok {
		return
	}
	req, err := decodeRequest(body)
	if err != nil {
		h.refuse(w, err)
		return
	}
	v, err := h.verify(r.Context(), req, h.clientKey(r))
	if err != nil {
		h.refuse(w, err)
		return
	}
	// Copies of one request (one nonce) on this node go on one at a time: the
	// others are replays, told so before they take a token.
	done, ok := h.inflight.claim(v.claims.nonce)
	if !ok {
		h.refuse(w, fmt.Errorf("%w: a request with this nonce is in progress", ErrNonceReplayed))
		return
	}
	defer done()
	// Everything that can be checked is checked: now the rate limits take their
	// tokens, given back if the issuance is refused after all.
	release, err := h.admit(r.Context(), v)
	if err != nil {
		h.refuse(w, err)
		return
	}
	issued, err := h.cfg.Issuer.Issue(r.Context(), v.issueRequest())
	if errors.Is(err, ca.ErrPersonChanged) {
		// Another first enrolment with this card started its person record since
		// this node looked. The tokens were taken from the buckets of the record
		// this request would have started: give them back, decide again for the
		// record that exists, and take its tokens, once.
		release()
		release = func() {}
		if err = h.redecide(r.Context(), v); err == nil {
			var again func()
			if again, err = h.admit(r.Context(), v); err == nil {
				release = again
				issued, err = h.cfg.Issuer.Issue(r.Context(), v.issueRequest())
			}
		}
	}
	if err != nil {
		release()
		h.refuseIssue(w, err, v.decision)
		return
	}
	h.issued.Inc()
	resp := Response{Serial: certserial.Format(issued.Serial), Profile: v.decision.Profile}
	for _, der := range append([][]byte{issued.DER}, issued.Chain...) {
		resp.Chain = append(resp.Chain, base64.StdEncoding.EncodeToString(der))
	}
	h.log.Info("enroll: certificate issued", "serial", resp.Serial, "profile", resp.Profile)
	writeJSON(w, http.StatusCreated, resp)
}

// admit has the policy take the rate limits' tokens for v (when it is an
// Admitter), and returns how to give them back.
func (h *Handler) admit(ctx context.Context, v *verified) (func(), error) {
	a, ok := h.cfg.Policy.(Admitter)
	if !ok {
		return func() {}, nil
	}
	return a.Admit(ctx, v.decision, v.policyRequest)
}

// refuseIssue answers an issuance that failed: the CA's refusals as their
// problems (the nonce used meanwhile, the cap reached at the leader), the rest as
// unavailable or issuance-failed.
func (h *Handler) refuseIssue(w http.ResponseWriter, err error, d Decision) {
	switch {
	case errors.Is(err, ca.ErrNonceUsed):
		err = fmt.Errorf("%w: (recorded by the CA)", ErrNonceReplayed)
	case errors.Is(err, ca.ErrNonceExpired):
		err = fmt.Errorf("%w: the nonce expired before the CA recorded it", ErrNonceUnknown)
	case errors.Is(err, ca.ErrPersonLimit):
		// Another enrolment of the person was committed since this node counted.
		err = fmt.Errorf("%w: %d derived certificates per person at most (profile %s)", ErrPersonLimit, d.MaxPerPerson, d.Profile)
	}
	switch p := problemFor(err); {
	case p == probRateLimited || p == probPolicyDenied || p == probPersonLimit || p == probNonceReplayed || p == probNonceUnknown:
		h.refuse(w, err)
	case errors.Is(err, ca.ErrNoCAKey) || errors.Is(err, ca.ErrAbandoned) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, ca.ErrPersonChanged):
		h.log.Warn("enroll: issuance did not complete", "err", err)
		h.refuseAs(w, probUnavailable, "the certificate was not issued; fetch a new challenge and try again")
	default:
		h.log.Error("enroll: issuance failed", "err", err)
		h.refuseAs(w, probIssuanceFailure, probIssuanceFailure.title)
	}
}

// verified is a request that passed every check that does not change anything:
// what is left is to take the rate limits' tokens and have the CA record the
// nonce's use with the intent.
type verified struct {
	claims        *claims
	nonceExpires  time.Time
	csr           *x509.CertificateRequest
	jpki          *jpki.Result
	person        personOf
	policyRequest PolicyRequest
	decision      Decision
}

// verify runs every check of an enrollment request that changes nothing, in an
// order that does the cheap and local work first: the proof's form and claims, the
// CSR and its binding, the proof's signature under the certificate's key, the
// nonce's MAC and expiry and an early look for its use, then the JPKI chain and
// revocation, the person record, the policy, and the per-person cap.
func (h *Handler) verify(ctx context.Context, req *Request, client string) (*verified, error) {
	proof, err := parseJWS(req.Proof)
	if err != nil {
		return nil, err
	}
	c, err := parseClaims(proof.payload)
	if err != nil {
		return nil, err
	}
	if subtle.ConstantTimeCompare([]byte(c.aud), []byte(h.cfg.Audience)) != 1 {
		return nil, fmt.Errorf("%w: aud is not this endpoint's URL", ErrAudienceMismatch)
	}
	now := h.cfg.Now()
	if err := h.checkTimes(c, now); err != nil {
		return nil, err
	}
	csr, der, err := parseCSR(req.CSR)
	if err != nil {
		return nil, err
	}
	if sum := sha256.Sum256(der); subtle.ConstantTimeCompare(sum[:], c.csrSHA256) != 1 {
		return nil, fmt.Errorf("%w: csr_sha256 is not the SHA-256 of the CSR sent", ErrCSRMismatch)
	}
	leaf, err := x509.ParseCertificate(proof.x5c[0])
	if err != nil {
		return nil, fmt.Errorf("%w: x5c[0] is not a certificate", jpki.ErrMalformed)
	}
	if err := proof.verify(leaf.PublicKey); err != nil {
		return nil, err
	}
	nonceExpires, err := h.nonces.check(c.nonce, now)
	if err != nil {
		return nil, err
	}
	if nonceUsed(h.cfg.Cluster, c.nonce) {
		return nil, ErrNonceReplayed
	}
	res, err := h.cfg.Verifier.Verify(ctx, proof.x5c, now)
	if err != nil {
		return nil, err
	}
	person, err := h.resolvePerson(ctx, res.Certificate, false)
	if err != nil {
		return nil, err
	}
	v := &verified{claims: c, nonceExpires: nonceExpires, csr: csr, jpki: res, person: person}
	v.policyRequest = PolicyRequest{
		Profile: req.Profile, JPKI: res.Certificate, CSR: csr,
		Revocation: res.Revocation, RevocationSource: h.source,
		Person: person.id, LimitKey: person.limitKey, Client: client, At: now,
	}
	if err := h.decide(ctx, v); err != nil {
		return nil, err
	}
	return v, nil
}

// decide has the policy decide on v and checks the cap on this node's state.
func (h *Handler) decide(ctx context.Context, v *verified) error {
	d, err := h.cfg.Policy.Decide(ctx, v.policyRequest)
	if err != nil {
		return err
	}
	if d.Template == nil {
		return fmt.Errorf("enroll: policy returned no template")
	}
	if jna := v.jpki.Certificate.X509().NotAfter; d.NotAfter.IsZero() || d.NotAfter.After(jna) {
		d.NotAfter = jna // never outlive the JPKI certificate, whatever the policy says
	}
	if err := h.checkCap(d, v.person, v.policyRequest.At); err != nil {
		return err
	}
	v.decision = d
	return nil
}

// redecide finds v's person record again on the leader's current state (after the
// CA refused the intent with ca.ErrPersonChanged: another first enrolment with the
// same card started the record meanwhile) and decides again for it: the
// pseudonym is the record's.
func (h *Handler) redecide(ctx context.Context, v *verified) error {
	p, err := h.resolvePerson(ctx, v.jpki.Certificate, true)
	if err != nil {
		return err
	}
	v.person = p
	v.policyRequest.Person, v.policyRequest.LimitKey = p.id, p.limitKey
	return h.decide(ctx, v)
}

// checkCap refuses early, before any token is taken, when this node's state shows
// the person at the profile's cap already. The leader checks again when it commits
// the intent (ca.Request.MaxPerPerson), where concurrent enrolments are counted.
func (h *Handler) checkCap(d Decision, p personOf, now time.Time) error {
	if d.MaxPerPerson <= 0 {
		return nil
	}
	var held int
	err := h.cfg.Cluster.View(func(tx *bbolt.Tx) (err error) {
		held, err = ca.CountForCap(tx, p.id, p.hint[:], now)
		return err
	})
	if err != nil {
		return fmt.Errorf("%w: count the person's certificates: %v", ErrUnavailable, err)
	}
	if err := policies.CheckCap(policies.Decision{Profile: d.Profile, MaxPerPerson: d.MaxPerPerson}, held); err != nil {
		return fmt.Errorf("%w: %s", ErrPersonLimit, strings.TrimPrefix(err.Error(), policies.ErrDenied.Error()+": "))
	}
	return nil
}

// sourceKind names the kind of a revocation source, as profiles name them.
func sourceKind(s jpki.RevocationSource) string {
	switch s.(type) {
	case *jpki.CRLSource:
		return jpki.RevocationCRL
	case *jpki.OCSPSource:
		return jpki.RevocationOCSP
	}
	return jpki.RevocationNone
}

// checkTimes: iat not after now + skew, exp after iat and at most MaxProofLifetime
// later, exp not before now − skew.
func (h *Handler) checkTimes(c *claims, now time.Time) error {
	skew := int64(h.cfg.ClockSkew / time.Second)
	n := now.Unix()
	switch {
	case c.iat > n+skew:
		return proofInvalid("iat lies in the future")
	case c.exp <= c.iat:
		return proofInvalid("exp is not after iat")
	case c.exp-c.iat > int64(MaxProofLifetime/time.Second):
		return proofInvalid("exp is more than %v after iat", MaxProofLifetime)
	case c.exp < n-skew:
		return proofInvalid("the proof expired")
	}
	return nil
}

// issueRequest is what the CA is asked to issue: the decision, keyed hashes only
// (the link, the person record, the name-and-birth hash of a new record, the
// basic-4 hint), and the nonce whose use the intent records.
func (v *verified) issueRequest() ca.Request {
	req := ca.Request{
		Profile:       v.decision.Profile,
		PolicyVersion: v.decision.PolicyVersion,
		Template:      v.decision.Template,
		PublicKey:     v.csr.PublicKey,
		NotAfter:      v.decision.NotAfter,
		Link:          v.person.link[:],
		Person:        v.person.id,
		PersonMode:    v.person.mode,
		Hint:          v.person.hint[:],
		NonceHash:     nonceHash(v.claims.nonce),
		NonceExpires:  v.nonceExpires,
		SkipLints:     v.decision.SkipLints,
		MaxPerPerson:  v.decision.MaxPerPerson,
	}
	if v.person.mode == ca.PersonNew {
		req.NameBirth = v.person.nameBirth[:]
	}
	return req
}

func (h *Handler) refuse(w http.ResponseWriter, err error) {
	p := problemFor(err)
	var retry time.Duration
	if re := (*retryError)(nil); errors.As(err, &re) {
		retry = re.wait
	}
	h.refusals.WithLabelValues(p.name).Inc()
	h.log.Debug("enroll: refused", "problem", p.name)
	writeProblem(w, h.cfg.ProblemBase, p, problemDetail(p, err), retry)
}

func (h *Handler) refuseAs(w http.ResponseWriter, p problemType, detail string) {
	h.refusals.WithLabelValues(p.name).Inc()
	h.log.Debug("enroll: refused", "problem", p.name)
	writeProblem(w, h.cfg.ProblemBase, p, detail, 0)
}

// readBody reads at most MaxBodyBytes.
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return nil, fmt.Errorf("%w: more than %d bytes", ErrBodyTooLarge, MaxBodyBytes)
		}
		return nil, fmt.Errorf("%w: body unreadable", ErrRequestInvalid)
	}
	return body, nil
}

// decodeRequest decodes the JSON body: an object with proof and csr (strings) and
// optionally profile; no other member, none twice.
func decodeRequest(body []byte) (*Request, error) {
	m, err := decodeObject(body)
	if err != nil {
		return nil, fmt.Errorf("%w: body: %v", ErrRequestInvalid, err)
	}
	req := &Request{}
	fields := map[string]*string{"proof": &req.Proof, "csr": &req.CSR, "profile": &req.Profile}
	for name, raw := range m {
		dst, ok := fields[name]
		if !ok {
			return nil, fmt.Errorf("%w: unknown member %q", ErrRequestInvalid, clip(name))
		}
		if err := json.Unmarshal(raw, dst); err != nil || bytes.Equal(raw, []byte("null")) {
			return nil, fmt.Errorf("%w: %s is not a string", ErrRequestInvalid, name)
		}
	}
	switch {
	case req.Proof == "":
		return nil, fmt.Errorf("%w: no proof", ErrRequestInvalid)
	case req.CSR == "":
		return nil, fmt.Errorf("%w: no csr", ErrRequestInvalid)
	}
	return req, nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
