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
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.etcd.io/bbolt"

	"github.com/inkan-pki/inkan/ca"
	"github.com/inkan-pki/inkan/certserial"
	"github.com/inkan-pki/inkan/enrollapi"
	"github.com/inkan-pki/inkan/jpki"
	"github.com/inkan-pki/inkan/policies"
)

// Limits of the API.
const (
	// maxBodyBytes bounds a request body; a larger one is refused with body-too-large.
	maxBodyBytes = 64 << 10
	// defaultClockSkew is how far a client's clock may be ahead (iat) or behind (exp).
	defaultClockSkew = time.Minute
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
	Cluster replicated
	// Policy decides what is issued and re-bound (with the profiles of the
	// policy engine) and applies the profiles' rate limits; Issuer issues it.
	Policy *ProfilePolicy
	Issuer issuer
	// Rebinder, if set, has the API serve enrollapi.PathRebind (the node's
	// *ca.Authority).
	Rebinder rebinder
	// LinkKey keys the hashes that tie a certificate to the JPKI certificate, the
	// name-and-birth and basic-4 hashes, and the nonces' MAC (at least
	// jpki.MinHashKeyLen bytes): a cluster secret, the same on every node.
	LinkKey []byte
	// ProblemBase prefixes the problem type names ("urn:inkan:problem:"
	// if empty), e.g. "https://ca.example.jp/problems/" to point clients at
	// documentation.
	ProblemBase string
	// ClockSkew tolerated in iat and exp (a minute if 0).
	ClockSkew time.Duration
	// RequestRate and RequestBurst bound requests per client network on this
	// node (every endpoint together): a token bucket, RequestRate requests a
	// second on average, RequestBurst at once. Both zero mean one a second with a
	// burst of 10; a negative RequestRate means no limit.
	RequestRate  float64
	RequestBurst int
	// ClientPrefixV4 and ClientPrefixV6 are how addresses aggregate into the
	// networks per-address limits count (this API's and the profiles'): one
	// bucket per IPv4 /ClientPrefixV4 and per IPv6 /ClientPrefixV6 network. Both
	// zero mean IPv4 /24 and IPv6 /56.
	ClientPrefixV4, ClientPrefixV6 int
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

// handler is the enrollment API: an http.Handler serving enrollapi.PathChallenge
// and enrollapi.PathEnroll (and PathRebind, given a Rebinder) that a node mounts
// on its HTTPS API listener. Safe for concurrent use.
type handler struct {
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

// NewHandler checks cfg and returns the API: an http.Handler serving
// enrollapi's three paths, which is all a node mounts.
func NewHandler(cfg Config) (http.Handler, error) {
	h, err := newHandler(cfg)
	if err != nil {
		return nil, err
	}
	return h, nil
}

// newHandler is NewHandler with the handler's own type, which the tests read.
func newHandler(cfg Config) (*handler, error) {
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
	if len(cfg.LinkKey) < jpki.MinHashKeyLen {
		errs = append(errs, fmt.Errorf("link key shorter than %d bytes", jpki.MinHashKeyLen))
	}
	if cfg.ClockSkew < 0 || cfg.ClockSkew > enrollapi.MaxProofLifetime {
		errs = append(errs, fmt.Errorf("clock skew %v out of range (0 to %v)", cfg.ClockSkew, enrollapi.MaxProofLifetime))
	}
	prefix := clientPrefix{V4: cfg.ClientPrefixV4, V6: cfg.ClientPrefixV6}
	if prefix == (clientPrefix{}) {
		prefix = defaultClientPrefix
		cfg.ClientPrefixV4, cfg.ClientPrefixV6 = prefix.V4, prefix.V6
	}
	if err := prefix.check(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("enroll: config: %w", err)
	}
	if cfg.ProblemBase == "" {
		cfg.ProblemBase = defaultProblemBase
	}
	if cfg.ClockSkew == 0 {
		cfg.ClockSkew = defaultClockSkew
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	h := &handler{
		cfg:     cfg,
		source:  cfg.Verifier.RevocationKind(),
		nonces:  newNonceCodec(cfg.LinkKey),
		limiter: newLimiter(rateLimit{Rate: cfg.RequestRate, Burst: cfg.RequestBurst}),
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
	h.mux.HandleFunc("POST "+enrollapi.PathChallenge, h.serveChallenge)
	h.mux.HandleFunc("POST "+enrollapi.PathEnroll, h.serveEnroll)
	if cfg.Rebinder != nil {
		h.mux.HandleFunc("POST "+enrollapi.PathRebind, h.serveRebind)
	}
	return h, nil
}

// ServeHTTP implements http.Handler. A request the endpoints do not take is a
// problem like any refusal, not net/http's plain text: another method than
// POST (405, with Allow), or a path this node does not serve (404).
func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if _, pattern := h.mux.Handler(r); pattern == "" {
		post := r.Clone(r.Context())
		post.Method = http.MethodPost
		if _, pattern := h.mux.Handler(post); pattern != "" {
			w.Header().Set("Allow", http.MethodPost)
			h.refuseAs(w, probMethod, "the endpoint takes POST")
			return
		}
		h.refuseAs(w, probNotFound, "this node does not serve that path")
		return
	}
	h.mux.ServeHTTP(w, r)
}

// NotFound answers a path the API listener does not serve with the problem
// not-found (404), as the API answers every refusal, not with net/http's plain
// text. The node registers it at "/".
func NotFound() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeProblem(w, defaultProblemBase, probNotFound, "this node does not serve that path", 0)
	})
}

// serveChallenge hands out a nonce. It writes nothing: the nonce authenticates
// itself, and its use is recorded with what it is used for.
func (h *handler) serveChallenge(w http.ResponseWriter, r *http.Request) {
	if !h.limiter.allow(h.clientKey(r), h.cfg.Now()) {
		h.refuse(w, errRateLimited)
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
	writeJSON(w, http.StatusCreated, enrollapi.ChallengeResponse{Nonce: base64.RawURLEncoding.EncodeToString(nonce), Expires: expires})
}

// intake admits a POST of the API: the client's request rate, the media type,
// the body within maxBodyBytes. It refuses and returns false otherwise.
func (h *handler) intake(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	if !h.limiter.allow(h.clientKey(r), h.cfg.Now()) {
		h.refuse(w, errRateLimited)
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

func (h *handler) serveEnroll(w http.ResponseWriter, r *http.Request) {
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
		h.refuse(w, refuse(errNonceReplayed, "a request with this nonce is in progress"))
		return
	}
	defer done()
	// Everything that can be checked is checked: now the rate limits take their
	// tokens, given back if the issuance is refused after all.
	release, err := h.admit(v)
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
			if again, err = h.admit(v); err == nil {
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
	resp := enrollapi.Response{Serial: certserial.Format(issued.Serial), Profile: v.decision.Profile}
	for _, der := range append([][]byte{issued.DER}, issued.Chain...) {
		resp.Chain = append(resp.Chain, base64.StdEncoding.EncodeToString(der))
	}
	h.log.Info("enroll: certificate issued", "serial", resp.Serial, "profile", resp.Profile)
	writeJSON(w, http.StatusCreated, resp)
}

// admit has the policy take the rate limits' tokens for v, and returns how to
// give them back.
func (h *handler) admit(v *verified) (func(), error) {
	return h.cfg.Policy.admit(v.decision.Profile, v.policyRequest)
}

// refuseIssue answers an issuance that failed: the CA's refusals as their
// problems (the nonce used meanwhile, the cap reached at the leader), the rest as
// unavailable or issuance-failed.
func (h *handler) refuseIssue(w http.ResponseWriter, err error, d policies.Decision) {
	switch {
	case errors.Is(err, ca.ErrNonceUsed):
		err = refuse(errNonceReplayed, "(recorded by the CA)")
	case errors.Is(err, ca.ErrNonceExpired):
		err = refuse(errNonceUnknown, "the nonce expired before the CA recorded it")
	case errors.Is(err, ca.ErrPersonLimit):
		// Another enrolment of the person was committed since this node counted.
		err = refuse(errPersonLimit, "%d derived certificates per person at most (profile %s)", d.MaxPerPerson, d.Profile)
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
	policyRequest policyRequest
	decision      policies.Decision
}

// verify runs every check of an enrollment request that changes nothing, in an
// order that does the cheap and local work first: the proof's form and claims, the
// CSR and its binding, the proof's signature under the certificate's key, the
// nonce's MAC and expiry and an early look for its use, then the JPKI chain and
// revocation, the person record, the policy, and the per-person cap.
func (h *handler) verify(ctx context.Context, req *enrollapi.Request, client string) (*verified, error) {
	proof, err := parseJWS(req.Proof)
	if err != nil {
		return nil, err
	}
	c, err := parseClaims(proof.payload)
	if err != nil {
		return nil, err
	}
	if subtle.ConstantTimeCompare([]byte(c.aud), []byte(h.cfg.Audience)) != 1 {
		return nil, refuse(errAudienceMismatch, "aud is not this endpoint's URL")
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
		return nil, refuse(errCSRMismatch, "csr_sha256 is not the SHA-256 of the CSR sent")
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
		return nil, errNonceReplayed
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
	v.policyRequest = policyRequest{
		Profile: req.Profile, JPKI: res.Certificate, CSR: csr,
		Revocation: res.Revocation, RevocationSource: h.source,
		Person: person.id, LimitKey: person.limitKey, Client: client, At: now,
	}
	if err := h.decide(v); err != nil {
		return nil, err
	}
	return v, nil
}

// decide has the policy decide on v and checks the cap on this node's state.
func (h *handler) decide(v *verified) error {
	d, err := h.cfg.Policy.decide(v.policyRequest)
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
func (h *handler) redecide(ctx context.Context, v *verified) error {
	p, err := h.resolvePerson(ctx, v.jpki.Certificate, true)
	if err != nil {
		return err
	}
	v.person = p
	v.policyRequest.Person, v.policyRequest.LimitKey = p.id, p.limitKey
	return h.decide(v)
}

// checkCap refuses early, before any token is taken, when this node's state shows
// the person at the profile's cap already. The leader checks again when it commits
// the intent (ca.Request.Decision.MaxPerPerson), where concurrent enrolments are counted.
func (h *handler) checkCap(d policies.Decision, p personOf, now time.Time) error {
	if d.MaxPerPerson <= 0 {
		return nil
	}
	var held int
	err := h.cfg.Cluster.View(func(tx *bbolt.Tx) (err error) {
		held, err = ca.Read(tx).CountForCap(p.id, p.hint[:], now)
		return err
	})
	if err != nil {
		return refuse(errUnavailable, "count the person's certificates: %v", err)
	}
	if err := d.CheckCap(held); err != nil {
		reason, _ := policies.Reason(err)
		return refuse(errPersonLimit, "%s", reason)
	}
	return nil
}

// checkTimes: iat not after now + skew, exp after iat and at most
// enrollapi.MaxProofLifetime later, exp not before now − skew.
func (h *handler) checkTimes(c *claims, now time.Time) error {
	skew := int64(h.cfg.ClockSkew / time.Second)
	n := now.Unix()
	switch {
	case c.iat > n+skew:
		return proofInvalid("iat lies in the future")
	case c.exp <= c.iat:
		return proofInvalid("exp is not after iat")
	case c.exp-c.iat > int64(enrollapi.MaxProofLifetime/time.Second):
		return proofInvalid("exp is more than %v after iat", enrollapi.MaxProofLifetime)
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
		Decision:     v.decision,
		PublicKey:    v.csr.PublicKey,
		Link:         v.person.link[:],
		Person:       v.person.id,
		PersonMode:   v.person.mode,
		Hint:         v.person.hint[:],
		NonceHash:    nonceHash(v.claims.nonce),
		NonceExpires: v.nonceExpires,
	}
	if v.person.mode == ca.PersonNew {
		req.NameBirth = v.person.nameBirth[:]
	}
	return req
}

func (h *handler) refuse(w http.ResponseWriter, err error) {
	p := problemFor(err)
	var retry time.Duration
	if re := (*retryError)(nil); errors.As(err, &re) {
		retry = re.wait
	}
	h.refusals.WithLabelValues(p.name).Inc()
	h.log.Debug("enroll: refused", "problem", p.name)
	writeProblem(w, h.cfg.ProblemBase, p, problemDetail(p, err), retry)
}

func (h *handler) refuseAs(w http.ResponseWriter, p problemType, detail string) {
	h.refusals.WithLabelValues(p.name).Inc()
	h.log.Debug("enroll: refused", "problem", p.name)
	writeProblem(w, h.cfg.ProblemBase, p, detail, 0)
}

// readBody reads at most maxBodyBytes.
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return nil, refuse(errBodyTooLarge, "more than %d bytes", maxBodyBytes)
		}
		return nil, refuse(errRequestInvalid, "body unreadable")
	}
	return body, nil
}

// decodeRequest decodes the JSON body: an object with proof and csr (strings) and
// optionally profile; no other member, none twice.
func decodeRequest(body []byte) (*enrollapi.Request, error) {
	m, err := decodeObject(body)
	if err != nil {
		return nil, refuse(errRequestInvalid, "body: %v", err)
	}
	req := &enrollapi.Request{}
	fields := map[string]*string{"proof": &req.Proof, "csr": &req.CSR, "profile": &req.Profile}
	for name, raw := range m {
		dst, ok := fields[name]
		if !ok {
			return nil, refuse(errRequestInvalid, "unknown member %q", clip(name))
		}
		if err := json.Unmarshal(raw, dst); err != nil || bytes.Equal(raw, []byte("null")) {
			return nil, refuse(errRequestInvalid, "%s is not a string", name)
		}
	}
	switch {
	case req.Proof == "":
		return nil, refuse(errRequestInvalid, "no proof")
	case req.CSR == "":
		return nil, refuse(errRequestInvalid, "no csr")
	}
	return req, nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
