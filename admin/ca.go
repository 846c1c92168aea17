package admin

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"strconv"
	"strings"
	"time"

	"go.etcd.io/bbolt"

	"github.com/inkan-pki/inkan/ca"
	"github.com/inkan-pki/inkan/certserial"
	"github.com/inkan-pki/inkan/cluster"
	"github.com/inkan-pki/inkan/crlreason"
	"github.com/inkan-pki/inkan/hsm"
)

// The admin API of the issuing authority: CA ceremonies and certificates.
const (
	pathCAInit    = "/v1/ca/init"
	pathCAIssuers = "/v1/ca/issuers"
	pathCerts     = "/v1/certs/"
	pathCertList  = "/v1/certs"
	// pathBulkRevoke is not under pathCerts: "revoke" is no serial.
	pathBulkRevoke = "/v1/revocations"
)

// BulkRevokeRequest revokes many certificates with one reason.
type BulkRevokeRequest struct {
	Serials []string `json:"serials"` // hex
	Reason  string   `json:"reason"`
}

// BulkProgress is one line of a bulk revocation's answer (NDJSON): progress
// while it runs, then the outcome (Final).
type BulkProgress struct {
	Done    int          `json:"done"`
	Total   int          `json:"total"`
	Revoked int          `json:"revoked"`
	Failed  []bulkFailed `json:"failed,omitempty"`
	Final   bool         `json:"final,omitempty"`
	Error   string       `json:"error,omitempty"` // why it stopped early
}

// bulkFailed is a serial a bulk revocation could not revoke, and why.
type bulkFailed struct {
	Serial string `json:"serial"`
	Error  string `json:"error"`
}

// bulkCount is how many certificates a bulk revocation names: the serials of
// the decoded body, the same the handler revokes.
func bulkCount(v any) int {
	if req, ok := v.(*BulkRevokeRequest); ok {
		return max(1, len(req.Serials))
	}
	return 1
}

// Bounds of a certificate listing.
const (
	defaultCertList = 100
	maxCertList     = 10000
)

// CAInitRequest asks for a new issuing CA key (`inkan admin ca init`).
type CAInitRequest struct {
	Key      string    `json:"key"` // ec-p256 (default), ec-p384, rsa-3072
	Subject  CASubject `json:"subject"`
	SelfSign bool      `json:"self_sign"`          // a self-signed root, active at once (lab, demo)
	Validity string    `json:"validity,omitempty"` // of a self-signed root (default 87600h)
	KeyLabel string    `json:"key_label,omitempty"`
}

// CASubject is a CA certificate's subject.
type CASubject struct {
	CommonName   string `json:"common_name"`
	Organization string `json:"organization,omitempty"`
	Country      string `json:"country,omitempty"`
}

// CAInit is what `ca init` made: the issuer's ID and either its self-signed
// certificate or the CSR for the offline root.
type CAInit struct {
	ID          string `json:"id"`
	CSR         string `json:"csr,omitempty"`         // PEM
	Certificate string `json:"certificate,omitempty"` // PEM
}

// CAImportRequest installs a CA certificate signed by the offline root.
type CAImportRequest struct {
	Certificate string `json:"certificate"` // PEM
	// Chain is the certificates above it, issuer first, ending with the root (PEM).
	Chain string `json:"chain"`
}

// IssuerInfo is one CA certificate of the cluster.
type IssuerInfo struct {
	ID          string    `json:"id"`
	Status      string    `json:"status"`
	Subject     string    `json:"subject,omitempty"`
	NotBefore   time.Time `json:"not_before,omitzero"`
	NotAfter    time.Time `json:"not_after,omitzero"`
	KeyLabel    string    `json:"key_label"`
	CRLShards   int       `json:"crl_shards"`
	Created     time.Time `json:"created"`
	Certificate string    `json:"certificate,omitempty"` // PEM
}

// CertInfo is what the cluster records of a certificate. Link and person are
// keyed hashes; nothing about the person is kept in clear.
type CertInfo struct {
	Serial        string    `json:"serial"`
	Issuer        string    `json:"issuer"`
	Kind          string    `json:"kind"`
	Profile       string    `json:"profile,omitempty"`
	PolicyVersion uint64    `json:"policy_version,omitempty"`
	Status        string    `json:"status"`
	Reason        string    `json:"reason,omitempty"`
	RevokedAt     time.Time `json:"revoked_at,omitzero"`
	IssuedAt      time.Time `json:"issued_at,omitzero"`
	NotAfter      time.Time `json:"not_after"`
	Certificate   string    `json:"certificate,omitempty"` // PEM
}

// revokeRequest names the reason of a revocation (RFC 5280 CRLReason name).
type revokeRequest struct {
	Reason string `json:"reason"`
}

var (
	probCAUnknown    = problemType{"ca-unknown", http.StatusNotFound, "No such CA certificate"}
	probCertUnknown  = problemType{"cert-unknown", http.StatusNotFound, "No such certificate"}
	probNoActiveCA   = problemType{"no-active-ca", http.StatusConflict, "The cluster has no active CA certificate"}
	probNotAvailable = problemType{"not-available", http.StatusServiceUnavailable, "The node has not started this service"}
)

func (api *API) adminCAHandlers(handle func(string, routeAccess, http.HandlerFunc)) {
	handle("POST "+pathCAInit, routeAccess{action: actCAKeyGenerate, dual: true, body: newBody[CAInitRequest]}, api.adminCAInit)
	handle("GET "+pathCAIssuers, routeAccess{action: actConfigRead}, api.adminCAIssuers)
	handle("POST "+pathCAIssuers+"/{id}/import", routeAccess{action: actCAKeyImport, dual: true, body: newBody[CAImportRequest]}, api.adminCAImport)
	handle("POST "+pathCAIssuers+"/{id}/retire", routeAccess{action: actCACeremony, dual: true}, api.adminCARetire)
	handle("GET "+pathCertList, routeAccess{action: actCertRead}, api.adminCertList)
	handle("GET "+pathCerts+"{serial}", routeAccess{action: actCertRead}, api.adminCert)
	handle("POST "+pathCerts+"{serial}/revoke", routeAccess{action: actCertRevoke, dual: true, body: newBody[revokeRequest]}, api.adminCertRevoke)
	handle("POST "+pathBulkRevoke, routeAccess{action: actCertRevoke, dual: true, body: newBody[BulkRevokeRequest], count: bulkCount}, api.adminBulkRevoke)
	handle("POST "+pathCerts+"{serial}/hold", routeAccess{action: actCertHold, dual: true}, api.adminCertHold)
	handle("POST "+pathCerts+"{serial}/release", routeAccess{action: actCertRelease}, api.adminCertRelease)
}

// signingKeyType reads the key type of a CA or TSA key request (default
// ec-p256), or answers request-invalid naming the field.
func signingKeyType(w http.ResponseWriter, name string) (hsm.KeyType, bool) {
	switch key := hsm.KeyType(name); key {
	case "":
		return hsm.ECP256, true
	case hsm.ECP256, hsm.ECP384, hsm.RSA3072:
		return key, true
	}
	writeProblem(w, probRequestInvalid, fmt.Sprintf("key: %q is not one of ec-p256, ec-p384, rsa-3072", name))
	return "", false
}

func (api *API) authorityOr503(w http.ResponseWriter) *ca.Authority {
	auth := api.cfg.Authority()
	if auth == nil {
		writeProblem(w, probNotAvailable, "the issuing authority has not started on this node")
	}
	return auth
}

func (api *API) adminCAInit(w http.ResponseWriter, r *http.Request) {
	req := bodyOf[CAInitRequest](r)
	key, ok := signingKeyType(w, req.Key)
	if !ok {
		return
	}
	if strings.TrimSpace(req.Subject.CommonName) == "" {
		writeProblem(w, probRequestInvalid, "subject.common_name: required")
		return
	}
	if c := req.Subject.Country; c != "" && len(c) != 2 {
		writeProblem(w, probRequestInvalid, fmt.Sprintf("subject.country: %q is not a two-letter country code", c))
		return
	}
	var validity time.Duration
	if req.Validity != "" {
		d, err := time.ParseDuration(req.Validity)
		if err != nil || d < 24*time.Hour || d > 30*365*24*time.Hour {
			writeProblem(w, probRequestInvalid, fmt.Sprintf("validity: %q is not a duration within 24h..262800h", req.Validity))
			return
		}
		validity = d
	}
	auth := api.authorityOr503(w)
	if auth == nil {
		return
	}
	subj := pkix.Name{CommonName: req.Subject.CommonName}
	if req.Subject.Organization != "" {
		subj.Organization = []string{req.Subject.Organization}
	}
	if req.Subject.Country != "" {
		subj.Country = []string{req.Subject.Country}
	}
	out, err := auth.Init(r.Context(), ca.InitOptions{
		Key: key, Subject: subj, SelfSign: req.SelfSign, Validity: validity, KeyLabel: req.KeyLabel, Actor: api.actorOf(r),
	})
	if err != nil {
		writeCAError(w, err)
		return
	}
	res := CAInit{ID: out.ID}
	if out.CSR != nil {
		res.CSR = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: out.CSR}))
	}
	if out.Cert != nil {
		res.Certificate = certPEM(out.Cert.Raw)
	}
	api.log.Info("admin: CA key made", "issuer", out.ID, "self_signed", req.SelfSign)
	writeJSON(w, http.StatusCreated, res)
}

func (api *API) adminCAIssuers(w http.ResponseWriter, _ *http.Request) {
	var out []IssuerInfo
	err := api.c.View(func(tx *bbolt.Tx) error {
		issuers, err := ca.Read(tx).Issuers()
		for _, is := range issuers {
			out = append(out, issuerInfo(is))
		}
		return err
	})
	if err != nil {
		writeCAError(w, err)
		return
	}
	if out == nil {
		out = []IssuerInfo{}
	}
	writeJSON(w, http.StatusOK, out)
}

func issuerInfo(is ca.Issuer) IssuerInfo {
	info := IssuerInfo{ID: is.ID, Status: is.Status.String(), KeyLabel: is.KeyLabel, CRLShards: is.CRLShards, Created: is.Created}
	if is.Cert != nil {
		info.Subject = is.Cert.Subject.String()
		info.NotBefore, info.NotAfter = is.Cert.NotBefore, is.Cert.NotAfter
		info.Certificate = certPEM(is.Cert.Raw)
	}
	return info
}

func (api *API) adminCAImport(w http.ResponseWriter, r *http.Request) {
	req := bodyOf[CAImportRequest](r)
	certs, err := pemCertificates(req.Certificate)
	if err != nil || len(certs) != 1 {
		writeProblem(w, probRequestInvalid, "certificate: want exactly one PEM CERTIFICATE")
		return
	}
	chain, err := pemCertificates(req.Chain)
	if err != nil {
		writeProblem(w, probRequestInvalid, "chain: "+err.Error())
		return
	}
	auth := api.authorityOr503(w)
	if auth == nil {
		return
	}
	id := r.PathValue("id")
	if err := auth.Import(r.Context(), id, certs[0], chain, api.actorOf(r)); err != nil {
		writeCAErrorAbout(w, err, probCAUnknown)
		return
	}
	api.log.Info("admin: CA certificate installed", "issuer", id)
	var is ca.Issuer
	if err := api.c.View(func(tx *bbolt.Tx) error { is, err = ca.Read(tx).LookupIssuer(id); return err }); err != nil {
		writeCAErrorAbout(w, err, probCAUnknown)
		return
	}
	writeJSON(w, http.StatusOK, issuerInfo(is))
}

func (api *API) adminCARetire(w http.ResponseWriter, r *http.Request) {
	auth := api.authorityOr503(w)
	if auth == nil {
		return
	}
	id := r.PathValue("id")
	if err := auth.Retire(r.Context(), id, api.actorOf(r)); err != nil {
		writeCAErrorAbout(w, err, probCAUnknown)
		return
	}
	api.log.Info("admin: CA certificate retired", "issuer", id)
	w.WriteHeader(http.StatusNoContent)
}

// adminCertList lists certificates, filtered by the query: status (good,
// revoked, held, pending), profile, issued_after, issued_before and
// expiring_before (RFC 3339 times), kind (derived, ocsp-responder), in serial
// order per CA, at most limit (100; up to 10000), from after (a serial).
func (api *API) adminCertList(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var times [3]time.Time
	for i, name := range []string{"issued_after", "issued_before", "expiring_before"} {
		if v := q.Get(name); v != "" {
			t, err := time.Parse(time.RFC3339, v)
			if err != nil {
				writeProblem(w, probRequestInvalid, fmt.Sprintf("%s: %q is not an RFC 3339 time (2026-01-02T15:04:05Z)", name, v))
				return
			}
			times[i] = t
		}
	}
	limit := defaultCertList
	if v := q.Get("limit"); v != "" {
		l, err := strconv.Atoi(v)
		if err != nil || l < 1 || l > maxCertList {
			writeProblem(w, probRequestInvalid, fmt.Sprintf("limit: %q is not a number within 1..%d", v, maxCertList))
			return
		}
		limit = l
	}
	status, profile, kind := q.Get("status"), q.Get("profile"), q.Get("kind")
	switch status {
	case "", "good", "revoked", "held", "pending":
	default:
		writeProblem(w, probRequestInvalid, fmt.Sprintf("status: %q is not one of good, revoked, held, pending", status))
		return
	}
	var after *big.Int
	if v := q.Get("after"); v != "" {
		var ok bool
		if after, ok = parseSerial(w, "after", v); !ok {
			return
		}
	}
	out := []CertInfo{}
	errFull := errors.New("full")
	err := api.c.View(func(tx *bbolt.Tx) error {
		issuers, err := ca.Read(tx).Issuers()
		if err != nil {
			return err
		}
		for _, is := range issuers {
			err := ca.Read(tx).Walk(is.ID, func(st ca.CertStatus) error {
				if after != nil && st.Serial.Cmp(after) <= 0 {
					return nil
				}
				if (status != "" && st.Status.String() != status) || (!times[2].IsZero() && !st.NotAfter.Before(times[2])) {
					return nil
				}
				rec, err := ca.Read(tx).Lookup(st.Serial)
				if err != nil {
					return err
				}
				if (profile != "" && rec.Profile != profile) || (kind != "" && kindName(rec.Kind) != kind) ||
					(!times[0].IsZero() && !rec.IssuedAt.After(times[0])) || (!times[1].IsZero() && !rec.IssuedAt.Before(times[1])) {
					return nil
				}
				info := certInfo(rec)
				info.Certificate = ""
				out = append(out, info)
				if len(out) == limit {
					return errFull
				}
				return nil
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil && !errors.Is(err, errFull) {
		writeCAError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

func certInfo(rec ca.Record) CertInfo {
	info := CertInfo{
		Serial: certserial.Format(rec.Serial), Issuer: rec.Issuer, Kind: kindName(rec.Kind),
		Profile: rec.Profile, PolicyVersion: rec.PolicyVersion, Status: rec.Status.String(),
		IssuedAt: rec.IssuedAt, NotAfter: rec.NotAfter,
	}
	if rec.Status == ca.Revoked || rec.Status == ca.Held {
		info.Reason, info.RevokedAt = crlreason.Reason(rec.Reason).String(), rec.RevokedAt
	}
	if rec.DER != nil {
		info.Certificate = certPEM(rec.DER)
	}
	return info
}

func (api *API) adminCert(w http.ResponseWriter, r *http.Request) {
	serial, ok := parseSerial(w, "serial", r.PathValue("serial"))
	if !ok {
		return
	}
	rec, err := viewValue(api.c, func(tx *bbolt.Tx) (ca.Record, error) { return ca.Read(tx).Lookup(serial) })
	if err != nil {
		writeCAError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, certInfo(rec))
}

func (api *API) adminCertRevoke(w http.ResponseWriter, r *http.Request) {
	serial, ok := parseSerial(w, "serial", r.PathValue("serial"))
	if !ok {
		return
	}
	req := bodyOf[revokeRequest](r)
	reason, ok := revocationReason(req.Reason)
	if !ok {
		writeProblem(w, probRequestInvalid, fmt.Sprintf("reason: %q is not a revocation reason (%s); certificateHold is `hold`", req.Reason, strings.Join(reasonList(), ", ")))
		return
	}
	api.certChange(w, r, serial, "revoked", func(auth *ca.Authority) error {
		return auth.Revoke(r.Context(), serial, reason, api.actorOf(r))
	})
}

// adminBulkRevoke revokes many certificates, answering NDJSON progress lines
// (at most one a second) and the outcome. A serial that is unknown or not
// revocable is reported and skipped; a cluster error (no leader for the
// whole wait) stops it, and the outcome says how far it got.
func (api *API) adminBulkRevoke(w http.ResponseWriter, r *http.Request) {
	req := bodyOf[BulkRevokeRequest](r)
	reason, ok := revocationReason(req.Reason)
	if !ok {
		writeProblem(w, probRequestInvalid, fmt.Sprintf("reason: %q is not a revocation reason (%s)", req.Reason, strings.Join(reasonList(), ", ")))
		return
	}
	if len(req.Serials) == 0 || len(req.Serials) > maxCertList {
		writeProblem(w, probRequestInvalid, fmt.Sprintf("serials: give 1..%d", maxCertList))
		return
	}
	serials := make([]*big.Int, len(req.Serials))
	for i, s := range req.Serials {
		var ok bool
		if serials[i], ok = parseSerial(w, fmt.Sprintf("serials[%d]", i), s); !ok {
			return
		}
	}
	auth := api.authorityOr503(w)
	if auth == nil {
		return
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	enc := json.NewEncoder(w)
	flush := func() {
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
	}
	p := BulkProgress{Total: len(serials)}
	last := time.Now()
	actor := api.actorOf(r)
	for i, s := range serials {
		err := auth.Revoke(r.Context(), s, reason, actor)
		switch {
		case err == nil:
			p.Revoked++
		case errors.Is(err, ca.ErrNotFound), errors.Is(err, cluster.ErrRefused):
			p.Failed = append(p.Failed, bulkFailed{Serial: certserial.Format(s), Error: err.Error()})
		default:
			p.Error = err.Error()
		}
		p.Done = i + 1
		if p.Error != "" {
			break
		}
		if time.Since(last) >= time.Second {
			_ = enc.Encode(BulkProgress{Done: p.Done, Total: p.Total, Revoked: p.Revoked})
			flush()
			last = time.Now()
		}
	}
	p.Final = true
	_ = enc.Encode(p)
	api.log.Info("admin: bulk revocation", "revoked", p.Revoked, "failed", len(p.Failed), "total", p.Total, "stopped", p.Error != "")
}

func (api *API) adminCertHold(w http.ResponseWriter, r *http.Request) {
	serial, ok := parseSerial(w, "serial", r.PathValue("serial"))
	if !ok {
		return
	}
	api.certChange(w, r, serial, "held", func(auth *ca.Authority) error { return auth.Hold(r.Context(), serial, api.actorOf(r)) })
}

func (api *API) adminCertRelease(w http.ResponseWriter, r *http.Request) {
	serial, ok := parseSerial(w, "serial", r.PathValue("serial"))
	if !ok {
		return
	}
	api.certChange(w, r, serial, "released", func(auth *ca.Authority) error { return auth.Release(r.Context(), serial, api.actorOf(r)) })
}

func (api *API) certChange(w http.ResponseWriter, r *http.Request, serial *big.Int, what string, change func(*ca.Authority) error) {
	auth := api.authorityOr503(w)
	if auth == nil {
		return
	}
	if err := change(auth); err != nil {
		writeCAError(w, err)
		return
	}
	api.log.Info("admin: certificate "+what, "serial", certserial.Format(serial))
	api.adminCert(w, r)
}

// parseSerial reads a serial number in any form certserial.Parse accepts;
// field names the argument in the refusal.
func parseSerial(w http.ResponseWriter, field, s string) (*big.Int, bool) {
	n, err := certserial.Parse(s)
	if err != nil {
		writeProblem(w, probRequestInvalid, fmt.Sprintf("%s %v", field, err))
		return nil, false
	}
	return n, true
}

// writeCAError maps the authority's errors to problem types, then the
// cluster's. What was not found is a certificate.
func writeCAError(w http.ResponseWriter, err error) {
	writeCAErrorAbout(w, err, probCertUnknown)
}

// writeCAErrorAbout is writeCAError where notFound says what was not found.
func writeCAErrorAbout(w http.ResponseWriter, err error, notFound problemType) {
	switch {
	case errors.Is(err, ca.ErrNoActiveIssuer):
		writeProblem(w, probNoActiveCA, err.Error())
	case errors.Is(err, ca.ErrNotFound):
		writeProblem(w, notFound, err.Error())
	case errors.Is(err, ca.ErrActor), errors.Is(err, ca.ErrTemplate):
		writeProblem(w, probRequestInvalid, err.Error())
	default:
		writeError(w, err)
	}
}

// revocationReason reads name as a reason a revocation may give: an RFC 5280
// name other than certificateHold (that is a hold) and removeFromCRL (a delta
// CRL's entry, never a revocation's).
func revocationReason(name string) (crlreason.Reason, bool) {
	r, ok := crlreason.Parse(name)
	if !ok || r == crlreason.CertificateHold || r == crlreason.RemoveFromCRL {
		return 0, false
	}
	return r, true
}

// reasonList names the reasons revocationReason takes, in code order.
func reasonList() []string {
	var out []string
	for r := crlreason.Unspecified; r <= crlreason.AACompromise; r++ {
		if _, ok := revocationReason(r.String()); ok {
			out = append(out, r.String())
		}
	}
	return out
}

func kindName(k ca.Kind) string {
	switch k {
	case ca.Responder:
		return "ocsp-responder"
	case ca.TimeStamping:
		return "time-stamping"
	}
	return "derived"
}

func certPEM(der []byte) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

// pemCertificates reads the CERTIFICATE blocks of s (nothing else may be in it).
func pemCertificates(s string) ([][]byte, error) {
	var out [][]byte
	rest := []byte(s)
	for {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("a PEM %s block; want CERTIFICATE", blk.Type)
		}
		if _, err := x509.ParseCertificate(blk.Bytes); err != nil {
			return nil, fmt.Errorf("certificate %d: %w", len(out)+1, err)
		}
		out = append(out, blk.Bytes)
	}
	if len(strings.TrimSpace(string(rest))) != 0 {
		return nil, errors.New("text that is not PEM")
	}
	return out, nil
}
