package ca

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"math"
	"math/big"
	"slices"
	"strings"
	"time"

	"go.etcd.io/bbolt"
	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"

	"github.com/inkan-pki/inkan/ca/crl"
	"github.com/inkan-pki/inkan/cluster"
	"github.com/inkan-pki/inkan/policies"
)

// Request is what a caller (the enrollment API) asks the authority to issue: the
// policy's Decision for a subscriber's key, and what the intent records about the
// person. The authority decides what the decision's template must not: serial,
// validity start, issuer, key identifiers, CRL distribution point, AIA and basic
// constraints.
type Request struct {
	// Decision is the policy's (policies.Set.Decide): the profile and the policy
	// version, the template (subject, SANs, key usage, EKU, policy OIDs, extra
	// extensions), NotAfter (the JPKI certificate's notAfter, the profile's
	// validity; the issuer certificate's notAfter bounds it too), the lints the
	// profile skips, and MaxPerPerson: the person's cap (0: none). The leader
	// checks the cap when it applies the intent, in Raft order, so concurrent
	// requests on any nodes cannot pass it together: the request is refused with
	// ErrPersonLimit, and nothing is written, when the person already has
	// MaxPerPerson certificates that are not expired and not revoked (as
	// CountForCap counts them, pending intents included). It needs Person.
	Decision policies.Decision
	// PublicKey is the subscriber's key, from a CSR whose signature was checked.
	PublicKey crypto.PublicKey
	// Link is the keyed hash tying the certificate to the JPKI certificate;
	// Person the person record's identifier (person.go), for per-person limits
	// and re-binds. Both are recorded and indexed (ByLink, CountByPerson).
	Link   []byte
	Person []byte
	// PersonMode says what the intent does with the person record: start it
	// (PersonNew, with NameBirth, the keyed name-and-birth hash), find the link
	// bound to it (PersonSame), or bind the link to it (PersonJoin). A request
	// whose view of the record is out of date is refused with ErrPersonChanged.
	PersonMode PersonMode
	NameBirth  []byte
	// Hint is the keyed basic-4 hint of the JPKI certificate: the cap counts the
	// certificates issued under it too (CountForCap).
	Hint []byte
	// NonceHash is the SHA-256 of the challenge nonce the request used, and
	// NonceExpires its expiry: the intent records its use (refused with
	// ErrNonceUsed if it was used already, ErrNonceExpired if it expired), so an
	// enrolment costs two commits, intent and issued record.
	NonceHash    []byte
	NonceExpires time.Time
}

// Issued is an issued certificate with the chain above it (issuer first).
type Issued struct {
	Serial *big.Int
	DER    []byte
	Chain  [][]byte
}

// order is what the pipeline issues, from Issue, IssueResponder or
// IssueTimeStamping: a Request (the last two make its Decision themselves) and
// what the authority adds.
type order struct {
	Request
	lifetime time.Duration // if set, notAfter is notBefore+lifetime
	kind     Kind
	node     string
	actor    string
	issuer   string // the issuer to sign under; "" for the active one
}

// Issue issues a certificate: it prepares and lints the TBSCertificate here, then
// the leader commits the intent, signs in its HSM, checks the signature and commits
// the issued record, and only then is the certificate returned. Called on a
// follower, the signing steps are forwarded to the leader.
func (a *Authority) Issue(ctx context.Context, req Request) (*Issued, error) {
	if req.Decision.Template == nil || req.PublicKey == nil {
		return nil, fmt.Errorf("%w: a template and a public key are required", ErrTemplate)
	}
	if req.Decision.MaxPerPerson < 0 || req.Decision.MaxPerPerson > 0 && len(req.Person) == 0 {
		return nil, fmt.Errorf("%w: a per-person cap needs a person hash and a positive cap", ErrTemplate)
	}
	if req.PersonMode > PersonJoin || req.PersonMode != personNone && (len(req.Person) != personIDLen || len(req.Link) == 0) ||
		req.PersonMode == PersonNew && len(req.NameBirth) == 0 {
		return nil, fmt.Errorf("%w: a person record needs a %d-byte ID, a link, and for a new one its name-and-birth hash", ErrTemplate, personIDLen)
	}
	if (len(req.NonceHash) == 0) != req.NonceExpires.IsZero() || len(req.NonceHash) != 0 && len(req.NonceHash) != sha256.Size {
		return nil, fmt.Errorf("%w: a nonce needs its SHA-256 and its expiry", ErrTemplate)
	}
	return a.issue(ctx, order{Request: req, kind: Derived, actor: actorEnrollment})
}

// Responder certificates.
const (
	responderProfile     = "ocsp-responder"
	maxResponderLifetime = 30 * 24 * time.Hour
	// responderCN + the node's ID is a responder certificate's common name.
	responderCN = "inkan OCSP responder "
)

var oidOCSPNoCheck = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 48, 1, 5}

// IssueResponder issues a node's delegated OCSP responder certificate for its key
// from the active issuer: IssueResponderFrom with issuerID "". A node answers for
// each issuer under a responder certificate from that issuer
// (ResponderCertificates), so after a rollover it needs one from the retired
// issuer too.
func (a *Authority) IssueResponder(ctx context.Context, nodeID string, pub crypto.PublicKey, lifetime time.Duration) (*x509.Certificate, error) {
	return a.IssueResponderFrom(ctx, "", nodeID, pub, lifetime)
}

// IssueResponderFrom issues a node's delegated OCSP responder certificate for its
// key (RFC 6960 §4.2.2.2) from the issuer issuerID ("" for the active one), which
// may be active or retired: a retired issuer issues no more derived certificates,
// but its key still certifies the responders that answer for the ones it issued.
// The certificate is signed by the issuer's key, with EKU id-kp-OCSPSigning,
// id-pkix-ocsp-nocheck and keyUsage digitalSignature, valid for lifetime (at most
// MaxResponderLifetime, and not past the issuer's certificate). It goes through
// the same intent/issued pipeline and is recorded as the node's latest responder
// certificate from that issuer (ResponderCertificates). A leader that lacks a
// retired issuer's key fails with ErrNoCAKey and keeps leading.
func (a *Authority) IssueResponderFrom(ctx context.Context, issuerID, nodeID string, pub crypto.PublicKey, lifetime time.Duration) (*x509.Certificate, error) {
	if lifetime <= 0 || lifetime > maxResponderLifetime {
		return nil, fmt.Errorf("%w: responder lifetime %s: want up to %s", ErrTemplate, lifetime, maxResponderLifetime)
	}
	if nodeID == "" || pub == nil {
		return nil, fmt.Errorf("%w: a node ID and a public key are required", ErrTemplate)
	}
	var subject x509.Certificate
	subject.Subject.CommonName = responderCN + nodeID
	var is Issuer
	err := a.c.View(func(tx *bbolt.Tx) error {
		var err error
		if issuerID == "" {
			is, err = Read(tx).ActiveIssuer()
		} else {
			is, err = Read(tx).LookupIssuer(issuerID)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	if is.Cert != nil {
		subject.Subject.Country = is.Cert.Subject.Country
		subject.Subject.Organization = is.Cert.Subject.Organization
	}
	tmpl := &x509.Certificate{
		Subject:         subject.Subject,
		KeyUsage:        x509.KeyUsageDigitalSignature,
		ExtKeyUsage:     []x509.ExtKeyUsage{x509.ExtKeyUsageOCSPSigning},
		ExtraExtensions: []pkix.Extension{{Id: oidOCSPNoCheck, Value: asn1.NullBytes}},
	}
	iss, err := a.issue(ctx, order{Request: Request{Decision: policies.Decision{Profile: responderProfile, Template: tmpl}, PublicKey: pub},
		lifetime: lifetime, kind: Responder, node: nodeID, actor: actorSystem, issuer: issuerID})
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(iss.DER)
}

// signsUnder tells whether an issuer in status st signs a certificate of kind k:
// the active one anything, a retired one responder certificates only.
func signsUnder(st issuerStatus, k Kind) bool {
	return st == issuerActive || st == issuerRetired && k == Responder
}

// maxSerialTries: a fresh serial is drawn when the state refuses one as used.
const maxSerialTries = 3

func (a *Authority) issue(ctx context.Context, o order) (*Issued, error) {
	current := false
	for try := 1; ; try++ {
		sr, st, err := a.prepareOrder(ctx, o, current)
		if err == nil {
			var der []byte
			der, err = a.sign(ctx, sr)
			if err == nil {
				if err := a.published(ctx, sr.Serial); err != nil {
					return nil, err
				}
				return &Issued{Serial: new(big.Int).SetBytes(sr.Serial), DER: der, Chain: st.chain}, nil
			}
		}
		switch {
		case errors.Is(err, errSerialUsed) && try < maxSerialTries:
		case errors.Is(err, ErrNoActiveIssuer) && !current:
			// This node's state may lag an issuer's installation or rollover:
			// prepare again from a current read.
			current = true
		default:
			return nil, err
		}
	}
}

// signingParams is what Go's x509 signs with for a CA key: the hash the linted TBS
// names, and so the digest the HSM must sign.
func signingParams(pub crypto.PublicKey) (crypto.SignerOpts, x509.SignatureAlgorithm, error) {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return crypto.SHA256, x509.ECDSAWithSHA256, nil
		case elliptic.P384():
			return crypto.SHA384, x509.ECDSAWithSHA384, nil
		case elliptic.P521():
			return crypto.SHA512, x509.ECDSAWithSHA512, nil
		}
	case *rsa.PublicKey:
		return crypto.SHA256, x509.SHA256WithRSA, nil
	case ed25519.PublicKey:
		return crypto.Hash(0), x509.PureEd25519, nil
	}
	return nil, 0, fmt.Errorf("CA key type %T is not supported", pub)
}

// signRequest is what the leader signs: a prepared, linted TBSCertificate and what
// the intent records. It travels CBOR-encoded when forwarded.
type signRequest struct {
	_             struct{} `cbor:",toarray"`
	Issuer        string
	Serial        []byte
	TBS           []byte
	Profile       string
	PolicyVersion uint64
	Link          []byte
	Person        []byte
	NotAfter      int64
	Kind          uint8
	Node          string
	Actor         string
	MaxPerPerson  int
	PersonMode    uint8
	NameBirth     []byte
	Hint          []byte
	NonceHash     []byte
	NonceExpires  int64
}

// signReply is the leader's answer to a forwarded signRequest. A refusal comes
// back as the call's error, with its code (cluster.Call). Code and Msg are what
// a leader of the release before that sent instead: a node reads them so that a
// mixed cluster during a rolling upgrade fails such a request (by its message
// alone) rather than take it for a certificate.
type signReply struct {
	_    struct{} `cbor:",toarray"`
	DER  []byte
	Code string
	Msg  string
}

const callSign = "ca.sign"

// sign has the leader sign sr: here if this node leads, else over the cluster RPC.
func (a *Authority) sign(ctx context.Context, sr *signRequest) ([]byte, error) {
	if a.leading() {
		der, err := a.signHere(ctx, sr, false)
		if !errors.Is(err, cluster.ErrNotLeader) {
			return der, err
		}
		// Leadership moved while signing: the next leader takes the intent on.
	}
	rep, err := cluster.Call[signReply](ctx, a.c, callSign, sr)
	if err != nil {
		return nil, fmt.Errorf("ca: sign on the leader: %w", err)
	}
	if rep.Code != "" {
		return nil, fmt.Errorf("ca: sign on a leader of the previous release: %s", rep.Msg)
	}
	return rep.DER, nil
}

// serveSign is the leader's side of a forwarded signRequest.
func (a *Authority) serveSign(ctx context.Context, sr signRequest) (signReply, error) {
	if !a.leading() {
		return signReply{}, cluster.ErrNotLeader // the caller tries the next leader
	}
	if who, ok := cluster.CallerOf(ctx); ok && !who.Voter {
		if err := nonvoterMaySign(who.Node, &sr); err != nil {
			return signReply{}, err
		}
	}
	der, err := a.signHere(ctx, &sr, true)
	return signReply{DER: der}, err
}

// nonvoterMaySign checks what a nonvoter (an OCSP edge) asks the leader to
// sign: its own delegated responder certificate, nothing else. An edge holds
// no CA key and issues nothing (it serves no enrollment); the leader would
// otherwise sign for whoever runs it any certificate that passes checkTBS —
// a login certificate under anyone's pseudonym. The TBS itself (purpose,
// lifetime) is checked by checkTBS for every forwarded responder certificate.
func nonvoterMaySign(node string, sr *signRequest) error {
	if Kind(sr.Kind) != Responder || sr.Node != node {
		return fmt.Errorf("%w: %s asked for a certificate of kind %d for node %q", errNonvoterSign, node, sr.Kind, sr.Node)
	}
	return nil
}

// flight is one signing in progress on this node, so that a request retried while
// the first is still signing waits for it instead of signing twice.
type flight struct {
	tbsHash []byte
	done    chan struct{}
	der     []byte
	err     error
}

// Steps at which the crash hook is called.
const (
	stepIntent = "intent" // the intent is committed, nothing signed
	stepSigned = "signed" // the HSM signed, the issued record is not committed
	stepIssued = "issued" // the issued record is committed, not yet returned
)

func (a *Authority) step(name string, serial []byte) error {
	if a.crash == nil {
		return nil
	}
	return a.crash(name, serial)
}

// signHere runs the leader's steps for sr: intent, HSM signature, checks, issued.
// It is idempotent for a serial and TBS: a request retried here, or on a new
// leader, resumes the pending intent, or returns the certificate already issued.
func (a *Authority) signHere(ctx context.Context, sr *signRequest, forwarded bool) ([]byte, error) {
	var st *issuerState
	var status issuerStatus
	if err := a.c.View(func(tx *bbolt.Tx) error { var err error; st, status, err = a.stateOf(tx, sr.Issuer); return err }); err != nil {
		return nil, err
	}
	if !signsUnder(status, Kind(sr.Kind)) {
		return nil, fmt.Errorf("%w: issuer %s is %s", ErrNoActiveIssuer, sr.Issuer, status)
	}
	if forwarded {
		if err := a.checkTBS(st, sr); err != nil {
			return nil, err
		}
	}
	h := sha256.Sum256(sr.TBS)

	a.mu.Lock()
	if f, ok := a.flights[string(sr.Serial)]; ok {
		a.mu.Unlock()
		if !bytes.Equal(f.tbsHash, h[:]) {
			return nil, fmt.Errorf("%w: %x", errSerialUsed, sr.Serial)
		}
		select {
		case <-f.done:
			return f.der, f.err
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	f := &flight{tbsHash: h[:], done: make(chan struct{})}
	a.flights[string(sr.Serial)] = f
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		delete(a.flights, string(sr.Serial))
		a.mu.Unlock()
		close(f.done)
	}()
	f.der, f.err = a.runPipeline(ctx, st, status == issuerActive, sr, h[:])
	return f.der, f.err
}

// runPipeline signs sr under st. active says whether st is the active issuer: a
// leader that lacks the active key hands leadership away, one that lacks a
// retired issuer's key only fails the request.
func (a *Authority) runPipeline(ctx context.Context, st *issuerState, active bool, sr *signRequest, tbsHash []byte) ([]byte, error) {
	key, err := a.signer(ctx, st)
	if err != nil && !active {
		return nil, err
	}
	if err != nil {
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			if lc := a.leadCtx.Load(); lc != nil {
				a.refuseLeadership(*lc, st.id, err, false)
			}
		}()
		return nil, err
	}

	// 1. The intent, before any signature, in a batch with those of concurrent
	// issuances (groupcommit.go).
	intent := intentBody{Serial: sr.Serial, Issuer: sr.Issuer, TBSHash: tbsHash,
		Profile: sr.Profile, PolicyVersion: sr.PolicyVersion, Link: sr.Link, Person: sr.Person,
		NotAfter: sr.NotAfter, Kind: sr.Kind, Node: sr.Node, Actor: sr.Actor, MaxPerPerson: sr.MaxPerPerson,
		PersonMode: sr.PersonMode, NameBirth: sr.NameBirth, Hint: sr.Hint, NonceHash: sr.NonceHash, NonceExpires: sr.NonceExpires}
	first := a.firstResponses(sr.Issuer, sr.Serial)
	if err := a.intents.commitWith(ctx, sr.Issuer, intent, first, intentSize(&intent)); err != nil {
		if !errors.Is(err, cluster.ErrRefused) {
			return nil, fmt.Errorf("ca: commit intent %x: %w", sr.Serial, err)
		}
		for _, s := range []error{ErrPersonLimit, ErrNonceUsed, ErrNonceExpired, ErrPersonChanged, ErrNoPerson} {
			if errors.Is(err, s) {
				// The request, not the serial, is refused: nothing to resume.
				return nil, fmt.Errorf("ca: commit intent %x: %w", sr.Serial, err)
			}
		}
		// Used already: a retry of this very request resumes; anything else is
		// another certificate's serial.
		der, resume, rerr := a.resumable(ctx, sr, tbsHash)
		if rerr != nil {
			return nil, rerr
		}
		if !resume {
			if der == nil {
				return nil, fmt.Errorf("ca: commit intent %x: %w", sr.Serial, err)
			}
			return der, nil
		}
	}
	if err := a.step(stepIntent, sr.Serial); err != nil {
		return nil, err
	}
	if !a.leading() {
		return nil, fmt.Errorf("ca: intent %x committed: %w", sr.Serial, cluster.ErrNotLeader)
	}

	// 2. The signature, in the HSM, within the request's context (the wait for a
	// session is bounded by it).
	digest := sr.TBS
	if hf := st.opts.HashFunc(); hf != 0 {
		hh := hf.New()
		hh.Write(sr.TBS)
		digest = hh.Sum(nil)
	}
	sig, err := key.SignContext(ctx, digest, st.opts)
	if err != nil {
		a.abandon(sr)
		return nil, fmt.Errorf("ca: sign %x in the HSM: %w", sr.Serial, err)
	}
	der, err := assemble(sr.TBS, sig)
	if err != nil {
		a.abandon(sr)
		return nil, err
	}
	if err := a.step(stepSigned, sr.Serial); err != nil {
		return nil, err
	}

	// 3. The signature verifies under the CA certificate over the TBSCertificate
	// the intent names (der is that TBSCertificate with the signature, by
	// construction; applying the issued record checks its hash again).
	if err := st.cert.CheckSignature(st.alg, sr.TBS, sig); err != nil {
		a.abandon(sr)
		return nil, fmt.Errorf("ca: certificate %x: %w", sr.Serial, err)
	}

	// 4. The issued record; only then the certificate leaves.
	issued := issueBody{Serial: sr.Serial, DER: der, Actor: sr.Actor}
	if err := a.issues.commit(ctx, sr.Issuer, issued, len(der)+len(sr.Serial)+len(sr.Actor)+16); err != nil {
		if errors.Is(err, cluster.ErrRefused) {
			if prev, _, rerr := a.resumable(ctx, sr, tbsHash); rerr == nil && prev != nil {
				return prev, nil // issued by an earlier attempt
			}
			return nil, fmt.Errorf("ca: record %x: %w", sr.Serial, ErrAbandoned)
		}
		a.abandon(sr)
		return nil, fmt.Errorf("ca: record %x: %w", sr.Serial, err)
	}
	if err := a.step(stepIssued, sr.Serial); err != nil {
		return nil, err
	}
	return der, nil
}

// intentSize bounds the encoded size of an intent, for the batch's bound.
func intentSize(b *intentBody) int {
	return len(b.Serial) + len(b.Issuer) + len(b.TBSHash) + len(b.Profile) + len(b.Link) + len(b.Person) +
		len(b.Node) + len(b.Actor) + len(b.NameBirth) + len(b.Hint) + len(b.NonceHash) + 80
}

// resumable looks at the state's record of a serial whose intent was refused: it
// says to resume a pending intent for this very TBS, returns the certificate if it
// was issued already, and errs otherwise.
func (a *Authority) resumable(ctx context.Context, sr *signRequest, tbsHash []byte) (der []byte, resume bool, err error) {
	var r Record
	err = a.c.ViewCurrent(ctx, func(tx *bbolt.Tx) error {
		var err error
		r, err = Read(tx).Lookup(new(big.Int).SetBytes(sr.Serial))
		return err
	})
	switch {
	case errors.Is(err, ErrNotFound):
		return nil, false, nil // refused for another reason
	case err != nil:
		return nil, false, err
	case !bytes.Equal(r.TBSHash, tbsHash):
		return nil, false, fmt.Errorf("%w: %x", errSerialUsed, sr.Serial)
	case r.Status == Pending:
		return nil, true, nil
	case r.DER != nil:
		return r.DER, false, nil
	}
	return nil, false, fmt.Errorf("%w: %x", ErrAbandoned, sr.Serial)
}

// abandon resolves this node's own intent after a failed step, so that it does not
// wait for the next leader. If it cannot, the next leader will.
func (a *Authority) abandon(sr *signRequest) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.submitResolve(ctx, sr.Issuer, [][]byte{sr.Serial}); err != nil {
		a.log.Warn("ca: could not resolve an abandoned intent; the next leader will", "serial", fmt.Sprintf("%x", sr.Serial), "err", err)
	}
}

func (a *Authority) submitResolve(ctx context.Context, issuer string, serials [][]byte) error {
	for len(serials) > 0 {
		n := min(len(serials), maxResolve)
		cmd, err := cluster.NewCommand(commandResolve, 1, resolveBody{Issuer: issuer, Serials: serials[:n]})
		if err != nil {
			return err
		}
		if _, err := a.c.Submit(ctx, cmd); err != nil {
			return err
		}
		serials = serials[n:]
	}
	return nil
}

// resolveDangling revokes (cessationOfOperation) the intents committed before
// now-minAge that have no issued record and are not being signed here: a previous
// leader may have signed them, so OCSP and CRLs must cover them; they were never
// delivered.
func (a *Authority) resolveDangling(ctx context.Context, minAge time.Duration) error {
	var pending map[string][]*big.Int
	if err := a.c.View(func(tx *bbolt.Tx) error {
		var err error
		before := time.Unix(0, math.MaxInt64) // at a term's start: all of them, whatever the clocks
		if minAge > 0 {
			before = a.now().Add(-minAge)
		}
		pending, err = pendingIntents(tx, before)
		return err
	}); err != nil {
		return err
	}
	var errs []error
	for issuer, serials := range pending {
		var list [][]byte
		a.mu.Lock()
		for _, s := range serials {
			if _, busy := a.flights[string(s.Bytes())]; !busy {
				list = append(list, s.Bytes())
			}
		}
		a.mu.Unlock()
		if len(list) == 0 {
			continue
		}
		if err := a.submitResolve(ctx, issuer, list); err != nil {
			errs = append(errs, err)
			continue
		}
		a.log.Warn("ca: resolved dangling intents as revoked (cessationOfOperation)", "issuer", issuer, "count", len(list))
	}
	return errors.Join(errs...)
}

// assemble puts a TBSCertificate and its signature together into a certificate,
// with the signature algorithm the TBSCertificate names.
func assemble(tbs, sig []byte) ([]byte, error) {
	alg, ok := tbsSignatureAlgorithm(tbs)
	if !ok {
		return nil, errors.New("ca: malformed TBSCertificate")
	}
	b := cryptobyte.NewBuilder(make([]byte, 0, len(tbs)+len(alg)+len(sig)+16))
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddBytes(tbs)
		b.AddBytes(alg)
		b.AddASN1BitString(sig)
	})
	return b.Bytes()
}

// tbsSignatureAlgorithm returns the DER of the TBSCertificate's signature field.
func tbsSignatureAlgorithm(tbs []byte) ([]byte, bool) {
	in := cryptobyte.String(tbs)
	var body cryptobyte.String
	var alg cryptobyte.String
	ok := in.ReadASN1(&body, cbasn1.SEQUENCE) &&
		body.SkipOptionalASN1(cbasn1.Tag(0).Constructed().ContextSpecific()) &&
		body.SkipASN1(cbasn1.INTEGER) &&
		body.ReadASN1Element(&alg, cbasn1.SEQUENCE)
	return alg, ok
}

// maxClockSkew bounds how far a forwarded TBSCertificate's notBefore may be from the
// leader's clock.
const maxClockSkew = 5 * time.Minute

// checkTBS checks a TBSCertificate prepared on another node before the leader
// commits its intent: it must be a leaf of the active issuer, for the serial and
// notAfter the request names, with the authority's own URLs.
func (a *Authority) checkTBS(st *issuerState, sr *signRequest) error {
	if !validSerial(sr.Serial) {
		return fmt.Errorf("%w: serial %x", ErrTemplate, sr.Serial)
	}
	der, err := assemble(sr.TBS, []byte{0})
	if err != nil {
		return fmt.Errorf("%w: %w", ErrTemplate, err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return fmt.Errorf("%w: TBSCertificate: %w", ErrTemplate, err)
	}
	now := a.now()
	var problems []string
	check := func(ok bool, what string) {
		if !ok {
			problems = append(problems, what)
		}
	}
	check(bytes.Equal(c.SerialNumber.Bytes(), sr.Serial), "serial")
	check(c.SignatureAlgorithm == st.alg, "signature algorithm")
	check(bytes.Equal(c.RawIssuer, st.cert.RawSubject), "issuer")
	check(bytes.Equal(c.AuthorityKeyId, st.cert.SubjectKeyId), "authority key ID")
	check(c.BasicConstraintsValid && !c.IsCA, "basic constraints")
	check(c.KeyUsage&(x509.KeyUsageCertSign|x509.KeyUsageCRLSign) == 0, "key usage")
	check(c.NotAfter.UnixNano() == sr.NotAfter && !c.NotAfter.After(st.cert.NotAfter), "notAfter")
	check(c.NotBefore.After(now.Add(-maxClockSkew)) && c.NotBefore.Before(now.Add(maxClockSkew)), "notBefore")
	responder := slices.Contains(c.ExtKeyUsage, x509.ExtKeyUsageOCSPSigning)
	check(responder == (Kind(sr.Kind) == Responder), "kind")
	// A time-stamping certificate is for time-stamping only (a profile may
	// still give a derived certificate the timeStamping purpose).
	check(Kind(sr.Kind) != TimeStamping || slices.Equal(c.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageTimeStamping}), "kind")
	// A responder certificate is for OCSP signing only, under the responder's
	// subject, and short-lived (IssueResponderFrom makes no other).
	if Kind(sr.Kind) == Responder {
		check(slices.Equal(c.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageOCSPSigning}) && len(c.UnknownExtKeyUsage) == 0 &&
			c.KeyUsage == x509.KeyUsageDigitalSignature, "purpose")
		check(c.Subject.CommonName == responderCN+sr.Node && len(c.DNSNames)+len(c.IPAddresses)+len(c.EmailAddresses)+len(c.URIs) == 0, "subject")
		check(!c.NotAfter.After(now.Add(maxResponderLifetime+maxClockSkew)), "lifetime")
	}
	if len(problems) > 0 {
		return fmt.Errorf("%w: forwarded TBSCertificate %x: wrong %s", ErrTemplate, sr.Serial, strings.Join(problems, ", "))
	}
	check(slices.Equal(c.CRLDistributionPoints, []string{a.cfg.URLs.CRLURL(st.id, crl.Shard(c.SerialNumber, st.shards))}), "CRL distribution point")
	check(slices.Equal(c.OCSPServer, []string{a.cfg.URLs.OCSP}), "OCSP URL")
	check(slices.Equal(c.IssuingCertificateURL, []string{a.cfg.URLs.IssuerURL(st.id)}), "caIssuers URL")
	if len(problems) > 0 {
		return fmt.Errorf("%w: forwarded TBSCertificate %x: %s %v, the leader's %s", errURLs, sr.Serial, strings.Join(problems, ", "), c.OCSPServer, a.cfg.URLs.OCSP)
	}
	return nil
}
