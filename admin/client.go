package admin

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"time"

	"github.com/inkan-pki/inkan/cluster"
)

// Client calls a node's admin API: over its unix socket, or over mutual
// TLS as an operator.
type Client struct {
	socket string // the socket's path, or the URL
	base   string // "http://admin" for the socket, the https URL otherwise
	hc     *http.Client
}

// NewClient returns a client of the admin socket at path
// (<data_dir>/admin.sock).
func NewClient(path string) *Client {
	d := net.Dialer{Timeout: 5 * time.Second}
	return &Client{socket: path, base: "http://admin", hc: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialContext(ctx, "unix", path)
		},
		DisableKeepAlives: true,
	}}}
}

// NewClientTLS returns a client of the admin API at url (admin.listen,
// "https://host:port") that authenticates with cert (the operator's
// certificate and key) and trusts roots for the node's certificate (the
// cluster CA, <data_dir>/cluster-ca.pem).
func NewClientTLS(url string, roots *x509.CertPool, cert tls.Certificate) *Client {
	return &Client{socket: url, base: strings.TrimRight(url, "/"), hc: &http.Client{Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
	}}}
}

// ProposedError says that the request was put under dual control: recorded,
// not run. It runs once enough operators approve it.
type ProposedError struct{ Request ApprovalRequest }

func (e *ProposedError) Error() string {
	return fmt.Sprintf("request %s proposed: %s needs %d approvals by %s operators before %s",
		e.Request.ID, e.Request.Action, e.Request.Approvals, e.Request.Role, e.Request.Expires.Local().Format(time.RFC3339))
}

// Status returns the node's view of the cluster.
func (a *Client) Status(ctx context.Context) (*Status, error) {
	var st Status
	return &st, a.do(ctx, http.MethodGet, pathStatus, nil, &st)
}

// GrantJoin asks the cluster to grant a join, for role (voter or nonvoter), to
// the node with keys (as `inkan join-keys` printed them), valid for ttl from the
// grant. It makes the token here — the cluster and the approvers see only the
// SHA-256 of its secret — and returns it with the grant; under dual control the
// grant is proposed (a *ProposedError, with the token too: it admits the node
// once the request is approved and run).
func (a *Client) GrantJoin(ctx context.Context, role string, keys cluster.JoinKeys, ttl time.Duration) (token string, _ *JoinGrant, err error) {
	st, err := a.Status(ctx)
	if err != nil {
		return "", nil, err
	}
	ca, err := hex.DecodeString(st.ClusterCA)
	if err != nil || len(ca) != 32 {
		return "", nil, fmt.Errorf("admin: %s: the cluster's CA fingerprint %q", a.socket, st.ClusterCA)
	}
	token, id, hash, err := cluster.NewJoinToken(ca)
	if err != nil {
		return "", nil, err
	}
	req := joinGrantRequest{Role: role, Node: keys.Node, NodeKey: keys.NodeKey.String(), TransportKey: keys.TransportKey.String(),
		TTL: ttl.String(), TokenID: hex.EncodeToString(id), SecretSHA256: hex.EncodeToString(hash)}
	var g JoinGrant
	return token, &g, a.do(ctx, http.MethodPost, pathJoinTokens, req, &g)
}

// ApproveTransportKey approves fp as the transport key of voter node (one that
// joined before joins were granted to keys).
func (a *Client) ApproveTransportKey(ctx context.Context, node string, fp cluster.KeyFingerprint) error {
	return a.do(ctx, http.MethodPost, pathMembers+url.PathEscape(node)+"/transport-key", transportKeyApproval{TransportKey: fp.String()}, nil)
}

// Rules returns the cluster's rules of dual control.
func (a *Client) Rules(ctx context.Context) (*Rules, error) {
	var out Rules
	return &out, a.do(ctx, http.MethodGet, pathRules, nil, &out)
}

// SetRules replaces the cluster's rules of dual control (under the rule of
// policy.apply) and returns them as now in force.
func (a *Client) SetRules(ctx context.Context, rules map[string]RuleSpec) (*Rules, error) {
	var out Rules
	return &out, a.do(ctx, http.MethodPut, pathRules, Rules{Rules: rules}, &out)
}

// RemoveNode removes the node id from the cluster, for ever.
func (a *Client) RemoveNode(ctx context.Context, id string) error {
	return a.do(ctx, http.MethodDelete, pathMembers+url.PathEscape(id), nil, nil)
}

// TransferLeadership has the leader hand leadership to another voter.
func (a *Client) TransferLeadership(ctx context.Context) (*Leadership, error) {
	var l Leadership
	return &l, a.do(ctx, http.MethodPost, pathTransfer, nil, &l)
}

// Leave decommissions the node: it drains, leaves the cluster and stops.
func (a *Client) Leave(ctx context.Context) error {
	return a.do(ctx, http.MethodPost, pathLeave, nil, nil)
}

func (a *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.base+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := a.hc.Do(req)
	if err != nil {
		return a.dialError(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("admin: %s: %w", a.socket, err)
	}
	if resp.StatusCode >= 300 || resp.StatusCode == http.StatusAccepted {
		return a.answerError(resp, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("admin: %s: answer: %w", a.socket, err)
		}
	}
	return nil
}

// answerError is the error an answer other than success stands for: a
// problem, or a proposal under dual control (202).
func (a *Client) answerError(resp *http.Response, b []byte) error {
	if resp.StatusCode == http.StatusAccepted {
		var q ApprovalRequest
		if err := json.Unmarshal(b, &q); err != nil {
			return fmt.Errorf("admin: %s: answer: %w", a.socket, err)
		}
		return &ProposedError{Request: q}
	}
	p := &Problem{}
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/problem+json") || json.Unmarshal(b, p) != nil || p.Type == "" {
		return fmt.Errorf("admin: %s: %s: %s", a.socket, resp.Status, bytes.TrimSpace(b))
	}
	return p
}

// dialError says what a failure to reach the socket means for an operator.
func (a *Client) dialError(err error) error {
	switch {
	case errors.Is(err, syscall.ENOENT):
		return fmt.Errorf("admin: no node is running with admin socket %s (it does not exist)", a.socket)
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("admin: no node is listening on %s (a node that stopped left it)", a.socket)
	case errors.Is(err, syscall.EACCES):
		return fmt.Errorf("admin: %s: permission denied; run as the node's user", a.socket)
	}
	return fmt.Errorf("admin: %s: %w", a.socket, err)
}

// InitCA makes a new issuing CA key: a self-signed root, or a CSR for an
// offline root.
func (a *Client) InitCA(ctx context.Context, req CAInitRequest) (*CAInit, error) {
	var out CAInit
	return &out, a.do(ctx, http.MethodPost, pathCAInit, req, &out)
}

// ImportCA installs the CA certificate of the pending issuer id.
func (a *Client) ImportCA(ctx context.Context, id string, req CAImportRequest) (*IssuerInfo, error) {
	var out IssuerInfo
	return &out, a.do(ctx, http.MethodPost, pathCAIssuers+"/"+url.PathEscape(id)+"/import", req, &out)
}

// RetireCA stops issuance under the issuer id.
func (a *Client) RetireCA(ctx context.Context, id string) error {
	return a.do(ctx, http.MethodPost, pathCAIssuers+"/"+url.PathEscape(id)+"/retire", nil, nil)
}

// Issuers lists the cluster's CA certificates.
func (a *Client) Issuers(ctx context.Context) ([]IssuerInfo, error) {
	var out []IssuerInfo
	return out, a.do(ctx, http.MethodGet, pathCAIssuers, nil, &out)
}

// Cert returns what the cluster records of a certificate (serial in hex).
func (a *Client) Cert(ctx context.Context, serial string) (*CertInfo, error) {
	var out CertInfo
	return &out, a.do(ctx, http.MethodGet, pathCerts+url.PathEscape(serial), nil, &out)
}

// Certs lists certificates; query holds the filters (status, profile,
// issued_after, issued_before, expiring_before, kind, limit, after).
func (a *Client) Certs(ctx context.Context, query url.Values) ([]CertInfo, error) {
	var out []CertInfo
	p := pathCertList
	if len(query) > 0 {
		p += "?" + query.Encode()
	}
	return out, a.do(ctx, http.MethodGet, p, nil, &out)
}

// Revoke revokes a certificate with an RFC 5280 reason name.
func (a *Client) Revoke(ctx context.Context, serial, reason string) (*CertInfo, error) {
	var out CertInfo
	return &out, a.do(ctx, http.MethodPost, pathCerts+url.PathEscape(serial)+"/revoke", revokeRequest{Reason: reason}, &out)
}

// BulkRevoke revokes many certificates, calling progress with each progress
// line, and returns the outcome. Over a rule's threshold it is proposed
// (*ProposedError).
func (a *Client) BulkRevoke(ctx context.Context, req BulkRevokeRequest, progress func(BulkProgress)) (*BulkProgress, error) {
	b, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, a.base+pathBulkRevoke, bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	hr.Header.Set("Content-Type", "application/json")
	resp, err := a.hc.Do(hr)
	if err != nil {
		return nil, a.dialError(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/x-ndjson") {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return nil, a.answerError(resp, body)
	}
	dec := json.NewDecoder(resp.Body)
	for {
		var p BulkProgress
		if err := dec.Decode(&p); err != nil {
			return nil, fmt.Errorf("admin: %s: the answer ended before the outcome: %w", a.socket, err)
		}
		if p.Final {
			return &p, nil
		}
		if progress != nil {
			progress(p)
		}
	}
}

// Hold puts a certificate on hold (certificateHold).
func (a *Client) Hold(ctx context.Context, serial string) (*CertInfo, error) {
	var out CertInfo
	return &out, a.do(ctx, http.MethodPost, pathCerts+url.PathEscape(serial)+"/hold", nil, &out)
}

// Release takes a certificate off hold.
func (a *Client) Release(ctx context.Context, serial string) (*CertInfo, error) {
	var out CertInfo
	return &out, a.do(ctx, http.MethodPost, pathCerts+url.PathEscape(serial)+"/release", nil, &out)
}

// Profiles lists the active profiles.
func (a *Client) Profiles(ctx context.Context) ([]ProfileInfo, error) {
	var out []ProfileInfo
	return out, a.do(ctx, http.MethodGet, pathPolicies, nil, &out)
}

// Profile returns the active version of a profile, with its file.
func (a *Client) Profile(ctx context.Context, name string) (*ProfileInfo, error) {
	var out ProfileInfo
	return &out, a.do(ctx, http.MethodGet, pathPolicies+"/"+url.PathEscape(name), nil, &out)
}

// DiffPolicy shows how a candidate profile file differs from the active version.
func (a *Client) DiffPolicy(ctx context.Context, f PolicyFile) (*PolicyDiff, error) {
	var out PolicyDiff
	return &out, a.do(ctx, http.MethodPost, pathPolicyDiff, f, &out)
}

// ApplyPolicy makes a profile file the active version of its profile.
func (a *Client) ApplyPolicy(ctx context.Context, f PolicyFile) (*ProfileInfo, error) {
	var out ProfileInfo
	return &out, a.do(ctx, http.MethodPost, pathPolicyApply, f, &out)
}

// InitOperators makes the first admin from their CSR (PEM), on the socket of
// the cluster's first node.
func (a *Client) InitOperators(ctx context.Context, req OperatorInit) (*OperatorInfo, error) {
	var out OperatorInfo
	return &out, a.do(ctx, http.MethodPost, pathOperatorsInit, req, &out)
}

// Operators lists the operators.
func (a *Client) Operators(ctx context.Context) ([]OperatorInfo, error) {
	var out []OperatorInfo
	return out, a.do(ctx, http.MethodGet, pathOperators, nil, &out)
}

// Operator returns an operator's record with their certificate.
func (a *Client) Operator(ctx context.Context, id string) (*OperatorInfo, error) {
	var out OperatorInfo
	return &out, a.do(ctx, http.MethodGet, pathOperators+"/"+url.PathEscape(id), nil, &out)
}

// AddOperator adds an operator from their CSR (or proposes it).
func (a *Client) AddOperator(ctx context.Context, req OperatorAdd) (*OperatorInfo, error) {
	var out OperatorInfo
	return &out, a.do(ctx, http.MethodPost, pathOperators, req, &out)
}

// RemoveOperator removes an operator (or proposes it).
func (a *Client) RemoveOperator(ctx context.Context, id string) error {
	return a.do(ctx, http.MethodDelete, pathOperators+"/"+url.PathEscape(id), nil, nil)
}

// Approvals lists the requests under dual control (all of them, or those
// still open).
func (a *Client) Approvals(ctx context.Context, all bool) ([]Approval, error) {
	var out []Approval
	p := pathApprovals
	if all {
		p += "?all=1"
	}
	return out, a.do(ctx, http.MethodGet, p, nil, &out)
}

// Approval returns one request under dual control.
func (a *Client) Approval(ctx context.Context, id string) (*Approval, error) {
	var out Approval
	return &out, a.do(ctx, http.MethodGet, pathApprovals+"/"+url.PathEscape(id), nil, &out)
}

// Decide approves or rejects a request with the operator's signature
// (Approval.Sign, operator.SignApproval).
func (a *Client) Decide(ctx context.Context, id string, approve bool, sig []byte) (*Approval, error) {
	var out Approval
	verb := "/reject"
	if approve {
		verb = "/approve"
	}
	return &out, a.do(ctx, http.MethodPost, pathApprovals+"/"+url.PathEscape(id)+verb, decision{Signature: sig}, &out)
}

// Backup writes a signed backup of the cluster's state to w (a tar stream:
// see VerifyBackup for what it holds).
func (a *Client) Backup(ctx context.Context, w io.Writer) error {
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, a.base+pathBackup, nil)
	if err != nil {
		return err
	}
	resp, err := a.hc.Do(hr)
	if err != nil {
		return a.dialError(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/x-tar" {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return a.answerError(resp, body)
	}
	if _, err := io.Copy(w, resp.Body); err != nil {
		return fmt.Errorf("admin: %s: backup: %w", a.socket, err)
	}
	return nil
}

// OCSPStatus returns the state of the node's pre-signed OCSP cache.
func (a *Client) OCSPStatus(ctx context.Context) (*OCSPStatus, error) {
	var out OCSPStatus
	return &out, a.do(ctx, http.MethodGet, pathOCSPStatus, nil, &out)
}

// JoinKeys is what a join grant binds: the new node's ID and the fingerprints
// of the node and transport keys `inkan join-keys` made in its HSM. It is the
// cluster's own type, named here so that the CLI speaks to admin alone.
type JoinKeys = cluster.JoinKeys

// ParseKeyFingerprint reads a key fingerprint as `inkan join-keys` prints it
// ("sha256:" and 64 lower-case hex digits).
func ParseKeyFingerprint(s string) (cluster.KeyFingerprint, error) {
	return cluster.ParseKeyFingerprint(s)
}
