package admin

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"go.etcd.io/bbolt"

	"github.com/inkan-pki/inkan/ca"
	"github.com/inkan-pki/inkan/certserial"
	"github.com/inkan-pki/inkan/cluster"
	"github.com/inkan-pki/inkan/tsa"
)

// The admin API of the TSA.
const (
	pathTSA     = "/v1/tsa"
	pathTSAInit = "/v1/tsa/init"
	pathTSACert = "/v1/tsa/cert"
)

// TSAInitRequest asks for a new TSA key (`inkan admin tsa init`).
type TSAInitRequest struct {
	Key string `json:"key"` // ec-p256 (default), ec-p384, rsa-3072
}

// TSACertRequest asks the active CA for a TSA certificate (`inkan admin tsa cert`).
type TSACertRequest struct {
	Key        string `json:"key,omitempty"`         // the key's ID; the newest if empty
	CommonName string `json:"common_name,omitempty"` // "inkan TSA <key ID>" if empty
	Lifetime   string `json:"lifetime,omitempty"`    // a Go duration, 24h..87600h (default 43800h)
}

// TSAKeyInfo is one TSA key.
type TSAKeyInfo struct {
	ID        string    `json:"id"`
	Type      string    `json:"type"`
	Label     string    `json:"label"`
	PublicKey string    `json:"public_key"` // "sha256:…" of its SubjectPublicKeyInfo
	Created   time.Time `json:"created"`
	Request   string    `json:"request,omitempty"`
}

// TSACertInfo is one TSA certificate.
type TSACertInfo struct {
	Key         string    `json:"key"`
	Serial      string    `json:"serial"`
	Subject     string    `json:"subject"`
	NotBefore   time.Time `json:"not_before"`
	NotAfter    time.Time `json:"not_after"`
	Installed   time.Time `json:"installed"`
	Current     bool      `json:"current"`
	Certificate string    `json:"certificate"` // PEM
	Request     string    `json:"request,omitempty"`
}

// TSAStatus is the cluster's TSA as a node sees it.
type TSAStatus struct {
	Keys         []TSAKeyInfo  `json:"keys"`
	Certificates []TSACertInfo `json:"certificates"`
	// Tokens counts the tokens each node has logged.
	Tokens map[string]uint64 `json:"tokens"`
	// Policy and Accuracy are the answering node's (empty without a tsa section).
	Policy   string `json:"policy,omitempty"`
	Accuracy string `json:"accuracy,omitempty"`
}

const (
	defaultTSALifetime = 5 * 365 * 24 * time.Hour
	minTSALifetime     = 24 * time.Hour
)

var probTSAKeyUnknown = problemType{"tsa-key-unknown", http.StatusNotFound, "No such TSA key"}

func (api *API) adminTSAHandlers(handle func(string, routeAccess, http.HandlerFunc)) {
	handle("GET "+pathTSA, routeAccess{action: actConfigRead}, api.adminTSAStatus)
	handle("POST "+pathTSAInit, routeAccess{action: actCAKeyGenerate, dual: true, body: newBody[TSAInitRequest]}, api.adminTSAInit)
	handle("POST "+pathTSACert, routeAccess{action: actCACeremony, dual: true, body: newBody[TSACertRequest]}, api.adminTSACert)
}

func (api *API) tsaOr503(w http.ResponseWriter) *tsa.Service {
	s := api.cfg.TimeStamping()
	if s == nil {
		writeProblem(w, probNotAvailable, "the time-stamping authority has not started on this node")
	}
	return s
}

// approvedID is the approved request a call runs for, or "".
func approvedID(r *http.Request) string {
	if q := callerOf(r).approved; q != nil {
		return q.ID
	}
	return ""
}

func (api *API) adminTSAInit(w http.ResponseWriter, r *http.Request) {
	req := bodyOf[TSAInitRequest](r)
	key, ok := signingKeyType(w, req.Key)
	if !ok {
		return
	}
	s := api.tsaOr503(w)
	if s == nil {
		return
	}
	k, err := s.Init(r.Context(), tsa.InitOptions{Key: key, Actor: api.actorOf(r), Request: approvedID(r)})
	if err != nil {
		writeTSAError(w, err)
		return
	}
	api.log.Info("admin: TSA key made", "key", k.ID, "type", k.Type, "request", k.Request)
	writeJSON(w, http.StatusCreated, tsaKeyInfo(k))
}

func (api *API) adminTSACert(w http.ResponseWriter, r *http.Request) {
	req := bodyOf[TSACertRequest](r)
	lifetime := defaultTSALifetime
	if req.Lifetime != "" {
		d, err := time.ParseDuration(req.Lifetime)
		if err != nil || d < minTSALifetime || d > ca.MaxTimeStampingLifetime {
			writeProblem(w, probRequestInvalid, fmt.Sprintf("lifetime: %q is not a duration within %s..%s", req.Lifetime, minTSALifetime, ca.MaxTimeStampingLifetime))
			return
		}
		lifetime = d
	}
	if len(req.CommonName) > 64 || strings.ContainsAny(req.CommonName, "\n\r") {
		writeProblem(w, probRequestInvalid, "common_name: at most 64 characters on one line")
		return
	}
	s := api.tsaOr503(w)
	if s == nil {
		return
	}
	c, err := s.Certify(r.Context(), tsa.CertifyOptions{Key: req.Key, CommonName: req.CommonName, Lifetime: lifetime,
		Actor: api.actorOf(r), Request: approvedID(r)})
	if err != nil {
		writeTSAError(w, err)
		return
	}
	api.log.Info("admin: TSA certificate installed", "key", c.Key, "serial", certserial.Format(c.Cert.SerialNumber))
	writeJSON(w, http.StatusCreated, tsaCertInfo(c))
}

func (api *API) adminTSAStatus(w http.ResponseWriter, _ *http.Request) {
	out := TSAStatus{Keys: []TSAKeyInfo{}, Certificates: []TSACertInfo{}}
	err := api.c.View(func(tx *bbolt.Tx) error {
		keys, certs, tokens, err := tsa.Inventory(tx)
		if err != nil {
			return err
		}
		for _, k := range keys {
			out.Keys = append(out.Keys, tsaKeyInfo(k))
		}
		for _, c := range certs {
			out.Certificates = append(out.Certificates, tsaCertInfo(c))
		}
		out.Tokens = tokens
		return nil
	})
	if err != nil {
		writeError(w, err)
		return
	}
	if api.cfg.TSAPolicy != "" {
		out.Policy, out.Accuracy = api.cfg.TSAPolicy, api.cfg.TSAAccuracy.String()
	}
	writeJSON(w, http.StatusOK, out)
}

func tsaKeyInfo(k tsa.Key) TSAKeyInfo {
	return TSAKeyInfo{ID: k.ID, Type: string(k.Type), Label: k.Label, PublicKey: cluster.FingerprintOf(k.PublicKey).String(),
		Created: k.Created, Request: k.Request}
}

func tsaCertInfo(c tsa.Cert) TSACertInfo {
	return TSACertInfo{Key: c.Key, Serial: certserial.Format(c.Cert.SerialNumber), Subject: c.Cert.Subject.String(),
		NotBefore: c.Cert.NotBefore, NotAfter: c.Cert.NotAfter, Installed: c.Installed, Current: c.Current,
		Certificate: certPEM(c.Cert.Raw), Request: c.Request}
}

// writeTSAError maps the TSA's errors, then the authority's.
func writeTSAError(w http.ResponseWriter, err error) {
	if errors.Is(err, tsa.ErrUnknownKey) {
		writeProblem(w, probTSAKeyUnknown, err.Error())
		return
	}
	writeCAErrorAbout(w, err, probTSAKeyUnknown)
}

// InitTSA makes a new TSA key in the HSMs (under the rule of ca.key.generate).
func (a *Client) InitTSA(ctx context.Context, req TSAInitRequest) (*TSAKeyInfo, error) {
	var out TSAKeyInfo
	return &out, a.do(ctx, http.MethodPost, pathTSAInit, req, &out)
}

// CertifyTSA has the active CA issue a certificate for a TSA key, and makes it
// the one tokens are signed under.
func (a *Client) CertifyTSA(ctx context.Context, req TSACertRequest) (*TSACertInfo, error) {
	var out TSACertInfo
	return &out, a.do(ctx, http.MethodPost, pathTSACert, req, &out)
}

// TSA returns the cluster's TSA keys, certificates and token counts.
func (a *Client) TSA(ctx context.Context) (*TSAStatus, error) {
	var out TSAStatus
	return &out, a.do(ctx, http.MethodGet, pathTSA, nil, &out)
}
