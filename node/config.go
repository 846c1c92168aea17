package node

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/inkan-pki/inkan/cluster"
	"github.com/inkan-pki/inkan/internal/yamlshape"
	"github.com/inkan-pki/inkan/jpki"
)

// Config is a node's configuration file, typed. LoadConfig fills it from YAML and
// validates it; nothing reads a Config that has not passed Validate.
type Config struct {
	// DataDir holds the node's Raft log, state, OCSP cache and identity, and its
	// admin socket (admin.sock). It must not be open to group or others.
	DataDir string        `yaml:"data_dir"`
	Cluster clusterConfig `yaml:"cluster"`
	// API is the HTTPS listener of the node's services (enrollment, audit).
	API apiConfig `yaml:"api"`
	// OCSP is the plain-HTTP listener relying parties query (OCSP, CRLs and the
	// CA certificates), and this node's OCSP responder.
	OCSP ocspConfig `yaml:"ocsp"`
	// Admin is the admin API over mutual TLS, for operators with certificates
	// from the cluster's operator CA (optional: the admin socket serves the
	// node's own user).
	Admin listenConfig `yaml:"admin"`
	// Metrics is the plain-HTTP listener of /healthz, /readyz and /metrics, for
	// load balancers and Prometheus on the operators' network.
	Metrics listenConfig `yaml:"metrics"`
	HSM     hsmConfig    `yaml:"hsm"`
	// CA is the issuing authority's part of the node.
	CA caConfig `yaml:"ca"`
	// JPKI turns the enrollment API on: the J-LIS anchors and the revocation
	// source that My Number Card certificates are checked against. Without it the
	// node issues nothing to subscribers (OCSP, CRLs and the audit log still run).
	JPKI *jpki.Config `yaml:"jpki"`
	// Enroll tunes the enrollment API and the linkage job (with jpki only).
	Enroll enrollConfig `yaml:"enroll"`
	// Audit says who may read the audit API on the API listener.
	Audit auditConfig `yaml:"audit"`
	Log   logConfig   `yaml:"log"`
	// TSA turns on the time-stamping authority (POST /tsa on the API
	// listener) of a voter; without it the node issues no tokens.
	TSA *tsaConfig `yaml:"tsa"`
	// DrainTimeout bounds each step of a shutdown: the listeners finishing
	// in-flight requests, the services stopping, the cluster stopping (default 10s).
	DrainTimeout duration `yaml:"drain_timeout"`
}

// clusterConfig says how the node takes part in the Raft cluster.
type clusterConfig struct {
	// Name is the cluster's name, the origin line of its audit checkpoints.
	Name string `yaml:"name"`
	// Bind is the host:port the node listens on for Raft and cluster RPC (mTLS).
	Bind string `yaml:"bind"`
	// Advertise is the address other nodes dial; defaults to Bind.
	Advertise string `yaml:"advertise"`
	// Bootstrap makes this node the first voter of a new cluster. Only the first
	// node of a cluster sets it; the others join.
	Bootstrap bool `yaml:"bootstrap"`
	// Join is how a new node enters an existing cluster.
	Join *joinConfig `yaml:"join"`
	// Role is "voter" (default) or "nonvoter" (an OCSP/CRL edge, never in quorum).
	// A joining node gets the role its join token was made for; this says which
	// role the operator expects, and the node logs an error if they differ.
	Role string `yaml:"role"`
	// NodeID names the node in the cluster (1-64 of a-z, 0-9, '-'); made at
	// random on the first start if empty. It never changes after the first start.
	NodeID string `yaml:"node_id"`
	// Raft tunes the consensus timing; the defaults suit one data centre.
	Raft raftConfig `yaml:"raft"`
}

// raftConfig is the Raft timing. Longer timeouts ride out slower links at the
// cost of a slower failover: a leader lost is replaced after about
// heartbeat_timeout to twice that, plus an election.
type raftConfig struct {
	HeartbeatTimeout   duration `yaml:"heartbeat_timeout"`    // default 500ms
	ElectionTimeout    duration `yaml:"election_timeout"`     // default 500ms
	LeaderLeaseTimeout duration `yaml:"leader_lease_timeout"` // default 250ms
	SnapshotInterval   duration `yaml:"snapshot_interval"`    // default 2m
	SnapshotThreshold  uint64   `yaml:"snapshot_threshold"`   // default 8192 entries
}

// joinConfig names a member to contact and the one-time token an operator made.
type joinConfig struct {
	Address   string `yaml:"address"`
	TokenFile string `yaml:"token_file"`
}

// listenConfig is one listener.
type listenConfig struct {
	Listen string `yaml:"listen"`
}

// apiConfig is the HTTPS API listener.
type apiConfig struct {
	Listen string `yaml:"listen"`
	// PublicURL is the root clients reach the API at ("https://ca.example.jp"):
	// the audience an enrollment proof must name is PublicURL + "/v1/enroll".
	// Default https://<listen>; required when listen's host is unspecified.
	PublicURL string `yaml:"public_url"`
}

// ocspConfig is the relying parties' listener and this node's responder.
type ocspConfig struct {
	Listen string `yaml:"listen"`
	// PublicURL is where relying parties reach the OCSP listeners
	// ("http://ocsp.example.jp/"); certificates point there: the OCSP URL is
	// PublicURL, the CRLs are under PublicURL + "crl/" and the CA certificates
	// under PublicURL + "ca/". It is a cluster-wide setting: one name in front
	// of every node (a VIP, DNS round robin, a CDN), so that a relying party
	// that follows a certificate is answered while any node runs, and the
	// same on every node (the leader refuses, with ca.ErrURLs, a certificate
	// a node prepared with another). Default http://<listen>/, which suits a
	// one-node cluster only; required when listen's host is unspecified.
	PublicURL string `yaml:"public_url"`
	// Validity is nextUpdate - thisUpdate of a response (default 96h);
	// RefreshAfter the age at which it is signed again (default 48h).
	Validity     duration `yaml:"validity"`
	RefreshAfter duration `yaml:"refresh_after"`
	// Rate caps refresh signatures per second so issuance keeps HSM headroom
	// (default 0: no cap). Status changes are signed at once regardless.
	Rate float64 `yaml:"rate"`
	// ResponderLifetime is the life of this node's delegated responder
	// certificate, renewed at two thirds of it (default 168h, at most 720h).
	ResponderLifetime duration `yaml:"responder_lifetime"`
	// ArchiveYears is how long after a certificate expires its status is still
	// answered (default 10, 1..100): responder certificates keep being renewed
	// from every CA that issued certificates, retired or not, until that long
	// after the last of them expired, and every response states an archive
	// cutoff (RFC 6960 §4.4.4) of producedAt minus it. It is a cluster-wide
	// promise to relying parties: set the same on every node.
	ArchiveYears int `yaml:"archive_years"`
}

// archive is ArchiveYears as a duration (365-day years).
func (o ocspConfig) archive() time.Duration {
	return time.Duration(o.ArchiveYears) * 365 * 24 * time.Hour
}

// caConfig is the issuing authority's configuration.
type caConfig struct {
	// KeyMode is "per-node-hsm" (default: each voter has its own HSM and gets the
	// CA key by wrapped transfer) or "shared-hsm" (one network HSM all nodes
	// reach; the key is found there by label).
	KeyMode string `yaml:"key_mode"`
	// CRLShards is the number of CRL shards of CAs made from now on (default 16).
	CRLShards int `yaml:"crl_shards"`
}

// enrollConfig tunes enrollment and the JPKI linkage job.
type enrollConfig struct {
	// DefaultProfile is what an enrollment that names no profile gets
	// (default authentication). It must be among the active profiles.
	DefaultProfile string `yaml:"default_profile"`
	// LinkageInterval is how often the leader reads the J-LIS CRL for revoked
	// cards with derived certificates (default 5m; sooner when a grace period
	// ends). Every node refreshes its CRL on its own at jpki.revocation.refresh.
	LinkageInterval duration `yaml:"linkage_interval"`
	// ClientPrefixV4 and ClientPrefixV6 are the networks per-address rate
	// limits count (default 24 and 56): a client holding many addresses holds
	// them in one network.
	ClientPrefixV4 int `yaml:"client_prefix_v4"`
	ClientPrefixV6 int `yaml:"client_prefix_v6"`
	// RequestRate and RequestBurst bound what one client network asks of this
	// node's enrollment API, every endpoint together: RequestRate requests a
	// second on average, RequestBurst at once (default 1 and 10; a challenge
	// and an enrollment are two). A load test from one address raises them;
	// request_rate: -1 turns the limit off (a lab's choice, never production's).
	// The profiles' own rateLimits still apply.
	RequestRate  float64 `yaml:"request_rate"`
	RequestBurst int     `yaml:"request_burst"`
	// TrustedProxies are the addresses or networks (CIDR) of proxies in front of
	// the API whose X-Forwarded-For names the client; from any other peer the
	// header is ignored. Default none.
	TrustedProxies []string `yaml:"trusted_proxies"`
}

// trustedProxies parses TrustedProxies (validated on load).
func (e enrollConfig) trustedProxies() []netip.Prefix {
	var out []netip.Prefix
	for _, s := range e.TrustedProxies {
		if p, err := parseProxy(s); err == nil {
			out = append(out, p)
		}
	}
	return out
}

// parseProxy reads an address or a CIDR network.
func parseProxy(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// auditConfig is the audit API's exposure.
type auditConfig struct {
	// Public opens the audit API (entries, checkpoints, proofs) to anyone who
	// reaches the API listener, without an auditor certificate. Default false:
	// only operators whose role reads the audit log (auditors), before and after
	// `inkan admin init` alike. The log holds no personal data in clear, only
	// keyed hashes; opening it is a choice of transparency, not a necessity.
	Public bool `yaml:"public"`
}

// CA key modes.
const (
	keyModePerNode = "per-node-hsm"
	keyModeShared  = "shared-hsm"
)

// hsmConfig names the PKCS#11 module and token holding this node's keys and where
// the PIN comes from. The PIN itself never appears in the file.
type hsmConfig struct {
	Module string `yaml:"module"`
	// Token is the token label; TokenSerial selects by serial instead.
	Token       string `yaml:"token"`
	TokenSerial string `yaml:"token_serial"`
	// PINFile is a file readable by the node's user only (mode 0600 or stricter).
	PINFile string `yaml:"pin_file"`
	// PINEnv names an environment variable holding the PIN.
	PINEnv string `yaml:"pin_env"`
	// Sessions bounds the PKCS#11 session pool (default 4).
	Sessions int `yaml:"sessions"`
	// IdleTimeout closes sessions idle for longer (default 25s, under YubiHSM's 30s).
	IdleTimeout duration `yaml:"idle_timeout"`
}

// logConfig sets the node's slog output.
type logConfig struct {
	Level  string `yaml:"level"`  // debug, info (default), warn, error
	Format string `yaml:"format"` // text (default) or json
}

// duration is a time.Duration written as "25s" in YAML.
type duration time.Duration

// UnmarshalYAML reads a Go duration string.
func (d *duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("%q is not a duration (e.g. 30s, 5m)", n.Value)
	}
	*d = duration(v)
	return nil
}

// Role names.
const (
	roleVoter    = "voter"
	roleNonvoter = "nonvoter"
)

// LoadConfig reads, defaults and validates the YAML file at path. Unknown keys are
// errors, so a misspelt option never silently falls back to its default. Every
// problem is a FieldError naming the option and its line; several are listed one
// a line.
func LoadConfig(path string) (*Config, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	cfg, err := parseConfig(raw)
	if err != nil {
		if fes := yamlshape.Errors(err); len(fes) > 1 {
			return nil, fmt.Errorf("config %s: %d problems:\n  %w", path, len(fes), indent(err))
		}
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}

// indentedError indents the second and later lines of its error, keeping it.
type indentedError struct{ error }

func (e indentedError) Error() string { return strings.ReplaceAll(e.error.Error(), "\n", "\n  ") }
func (e indentedError) Unwrap() error { return e.error }

func indent(err error) error { return indentedError{err} }

// parseConfig decodes, defaults and validates a configuration document. Its
// errors are FieldErrors (joined when there are several), each with the line of
// its option when the document gives the option.
func parseConfig(raw []byte) (*Config, error) {
	var cfg Config
	err := yamlshape.Decode(raw, &cfg, func() error {
		cfg.setDefaults()
		return cfg.Validate()
	})
	if err != nil {
		return nil, err
	}
	return &cfg, nil
}

func (c *Config) setDefaults() {
	if c.Cluster.Role == "" {
		c.Cluster.Role = roleVoter
	}
	if c.Cluster.Advertise == "" {
		c.Cluster.Advertise = c.Cluster.Bind
	}
	if c.HSM.Module == "" {
		c.HSM.Module = "/usr/lib/softhsm/libsofthsm2.so"
	}
	if c.HSM.Sessions == 0 {
		c.HSM.Sessions = 4
	}
	if c.HSM.IdleTimeout == 0 {
		c.HSM.IdleTimeout = duration(25 * time.Second)
	}
	if c.Log.Level == "" {
		c.Log.Level = "info"
	}
	if c.Log.Format == "" {
		c.Log.Format = "text"
	}
	def := func(d *duration, v time.Duration) {
		if *d == 0 {
			*d = duration(v)
		}
	}
	def(&c.Cluster.Raft.HeartbeatTimeout, 500*time.Millisecond)
	def(&c.Cluster.Raft.ElectionTimeout, 500*time.Millisecond)
	def(&c.Cluster.Raft.LeaderLeaseTimeout, 250*time.Millisecond)
	def(&c.Cluster.Raft.SnapshotInterval, 2*time.Minute)
	if c.Cluster.Raft.SnapshotThreshold == 0 {
		c.Cluster.Raft.SnapshotThreshold = 8192
	}
	def(&c.DrainTimeout, 10*time.Second)
	if c.API.PublicURL == "" && c.API.Listen != "" {
		c.API.PublicURL = "https://" + c.API.Listen
	}
	if c.OCSP.PublicURL == "" && c.OCSP.Listen != "" {
		c.OCSP.PublicURL = "http://" + c.OCSP.Listen + "/"
	}
	def(&c.OCSP.Validity, 96*time.Hour)
	def(&c.OCSP.RefreshAfter, 48*time.Hour)
	def(&c.OCSP.ResponderLifetime, 7*24*time.Hour)
	if c.OCSP.ArchiveYears == 0 {
		c.OCSP.ArchiveYears = 10
	}
	if c.CA.KeyMode == "" {
		c.CA.KeyMode = keyModePerNode
	}
	if c.Enroll.DefaultProfile == "" {
		c.Enroll.DefaultProfile = "authentication"
	}
	def(&c.Enroll.LinkageInterval, 5*time.Minute)
	if c.Enroll.ClientPrefixV4 == 0 {
		c.Enroll.ClientPrefixV4 = 24
	}
	if c.Enroll.ClientPrefixV6 == 0 {
		c.Enroll.ClientPrefixV6 = 56
	}
	if c.Enroll.RequestRate == 0 {
		c.Enroll.RequestRate = 1
	}
	if c.Enroll.RequestBurst == 0 {
		c.Enroll.RequestBurst = 10
	}
	if c.CA.CRLShards == 0 {
		c.CA.CRLShards = 16
	}
	c.TSA.setDefaults()
}

// AdminSocket is the path of the node's admin socket.
func (c *Config) AdminSocket() string { return filepath.Join(c.DataDir, adminSocketName) }

const (
	adminSocketName = "admin.sock"
	// maxSocketPath is the longest unix socket path Linux takes (sun_path
	// holds 108 bytes with the terminating NUL).
	maxSocketPath = 107
)

// Validate checks every field and reports all problems at once, each a FieldError
// naming the field as it is written in the file.
func (c *Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, &fieldError{Path: field, Msg: fmt.Sprintf(format, args...)})
	}

	switch {
	case c.DataDir == "":
		bad("data_dir", "required")
	case !filepath.IsAbs(c.DataDir):
		bad("data_dir", "%q must be an absolute path", c.DataDir)
	case len(c.AdminSocket()) > maxSocketPath:
		bad("data_dir", "%q is too long for the admin socket %s inside it (at most %d bytes)", c.DataDir, adminSocketName, maxSocketPath)
	}

	if c.Cluster.Name == "" {
		bad("cluster.name", "required (it names the cluster in audit checkpoints)")
	} else if strings.ContainsAny(c.Cluster.Name, "\n\r") {
		bad("cluster.name", "must be a single line")
	}
	checkAddr(bad, "cluster.bind", c.Cluster.Bind, true)
	checkAddr(bad, "cluster.advertise", c.Cluster.Advertise, true)
	if host, _, err := net.SplitHostPort(c.Cluster.Advertise); err == nil && isUnspecified(host) {
		bad("cluster.advertise", "%q is not an address other nodes can dial; set cluster.advertise", c.Cluster.Advertise)
	}
	if id := c.Cluster.NodeID; id != "" && !cluster.ValidNodeID(id) {
		bad("cluster.node_id", "%q: use 1-64 of a-z, 0-9 and '-'", id)
	}
	switch c.Cluster.Role {
	case roleVoter, roleNonvoter:
	default:
		bad("cluster.role", "%q is not one of voter, nonvoter", c.Cluster.Role)
	}
	switch {
	case c.Cluster.Bootstrap && c.Cluster.Join != nil:
		bad("cluster.join", "a bootstrapping node does not join; set either cluster.bootstrap or cluster.join")
	case c.Cluster.Bootstrap && c.Cluster.Role == roleNonvoter:
		bad("cluster.role", "the bootstrapping node must be a voter")
	case c.Cluster.Join != nil:
		checkAddr(bad, "cluster.join.address", c.Cluster.Join.Address, true)
		if c.Cluster.Join.TokenFile == "" {
			bad("cluster.join.token_file", "required")
		}
	}

	r := c.Cluster.Raft
	for _, d := range []struct {
		field string
		v     duration
	}{
		{"cluster.raft.heartbeat_timeout", r.HeartbeatTimeout},
		{"cluster.raft.election_timeout", r.ElectionTimeout},
		{"cluster.raft.leader_lease_timeout", r.LeaderLeaseTimeout},
		{"cluster.raft.snapshot_interval", r.SnapshotInterval},
	} {
		if time.Duration(d.v) < 10*time.Millisecond {
			bad(d.field, "%s is shorter than 10ms", time.Duration(d.v))
		}
	}
	if r.ElectionTimeout < r.HeartbeatTimeout {
		bad("cluster.raft.election_timeout", "%s is shorter than cluster.raft.heartbeat_timeout (%s)",
			time.Duration(r.ElectionTimeout), time.Duration(r.HeartbeatTimeout))
	}
	if r.LeaderLeaseTimeout > r.HeartbeatTimeout {
		bad("cluster.raft.leader_lease_timeout", "%s is longer than cluster.raft.heartbeat_timeout (%s)",
			time.Duration(r.LeaderLeaseTimeout), time.Duration(r.HeartbeatTimeout))
	}

	checkAddr(bad, "api.listen", c.API.Listen, true)
	checkAddr(bad, "ocsp.listen", c.OCSP.Listen, true)
	checkAddr(bad, "metrics.listen", c.Metrics.Listen, true)
	checkAddr(bad, "admin.listen", c.Admin.Listen, false)
	seen := map[string]string{}
	for _, l := range []struct{ field, addr string }{
		{"cluster.bind", c.Cluster.Bind}, {"api.listen", c.API.Listen},
		{"ocsp.listen", c.OCSP.Listen}, {"metrics.listen", c.Metrics.Listen}, {"admin.listen", c.Admin.Listen},
	} {
		if l.addr == "" {
			continue
		}
		if prev, dup := seen[l.addr]; dup {
			bad(l.field, "address %s is already used by %s", l.addr, prev)
		}
		seen[l.addr] = l.field
	}

	checkPublicURL(bad, "api.public_url", c.API.PublicURL, c.API.Listen, "https")
	checkPublicURL(bad, "ocsp.public_url", c.OCSP.PublicURL, c.OCSP.Listen, "http")
	if c.OCSP.PublicURL != "" && !strings.HasSuffix(c.OCSP.PublicURL, "/") {
		bad("ocsp.public_url", "%q must end with /", c.OCSP.PublicURL)
	}
	if c.API.PublicURL != "" && strings.HasSuffix(c.API.PublicURL, "/") {
		bad("api.public_url", "%q must not end with / (the API's paths are appended)", c.API.PublicURL)
	}
	o := c.OCSP
	switch {
	case time.Duration(o.Validity) < time.Hour || time.Duration(o.Validity) > 14*24*time.Hour:
		bad("ocsp.validity", "%s is outside 1h..336h", time.Duration(o.Validity))
	case o.RefreshAfter <= 0 || o.RefreshAfter >= o.Validity:
		bad("ocsp.refresh_after", "%s must be positive and shorter than ocsp.validity (%s)", time.Duration(o.RefreshAfter), time.Duration(o.Validity))
	}
	if o.Rate < 0 {
		bad("ocsp.rate", "%v is negative", o.Rate)
	}
	if d := time.Duration(o.ResponderLifetime); d < time.Hour || d > 30*24*time.Hour {
		bad("ocsp.responder_lifetime", "%s is outside 1h..720h", d)
	} else if d < time.Duration(o.Validity) {
		bad("ocsp.responder_lifetime", "%s is shorter than ocsp.validity (%s): responses would be cut short", d, time.Duration(o.Validity))
	}
	if o.ArchiveYears < 1 || o.ArchiveYears > 100 {
		bad("ocsp.archive_years", "%d is outside 1..100", o.ArchiveYears)
	}
	switch c.CA.KeyMode {
	case keyModePerNode, keyModeShared:
	default:
		bad("ca.key_mode", "%q is not one of %s, %s", c.CA.KeyMode, keyModePerNode, keyModeShared)
	}
	if c.CA.CRLShards < 1 || c.CA.CRLShards > 4096 {
		bad("ca.crl_shards", "%d is outside 1..4096", c.CA.CRLShards)
	}
	if d := time.Duration(c.Enroll.LinkageInterval); d < time.Second || d > 24*time.Hour {
		bad("enroll.linkage_interval", "%s is outside 1s..24h", d)
	}
	if c.JPKI != nil && len(c.JPKI.Anchors) == 0 {
		bad("jpki.anchors", "required: the J-LIS CA certificates (PEM files) that card certificates chain to")
	}
	if c.JPKI != nil {
		if err := c.JPKI.CheckRefresh(); err != nil {
			errs = append(errs, err)
		}
	}
	if v := c.Enroll.ClientPrefixV4; v < 1 || v > 32 {
		bad("enroll.client_prefix_v4", "%d is outside 1..32", v)
	}
	if v := c.Enroll.ClientPrefixV6; v < 1 || v > 128 {
		bad("enroll.client_prefix_v6", "%d is outside 1..128", v)
	}
	if v := c.Enroll.RequestRate; v < 0 && v != -1 {
		bad("enroll.request_rate", "%v is negative (-1 turns the limit off)", v)
	}
	if v := c.Enroll.RequestBurst; v < 1 {
		bad("enroll.request_burst", "%d is less than 1", v)
	}
	for i, p := range c.Enroll.TrustedProxies {
		if _, err := parseProxy(p); err != nil {
			bad(fmt.Sprintf("enroll.trusted_proxies[%d]", i), "%q is not an address or a CIDR network", p)
		}
	}
	c.TSA.validate(c.Cluster.Role, bad)

	if c.HSM.Module == "" || !filepath.IsAbs(c.HSM.Module) {
		bad("hsm.module", "%q must be an absolute path to a PKCS#11 module", c.HSM.Module)
	}
	switch {
	case c.HSM.Token == "" && c.HSM.TokenSerial == "":
		bad("hsm.token", "required (a token label), or set hsm.token_serial")
	case c.HSM.Token != "" && c.HSM.TokenSerial != "":
		bad("hsm.token_serial", "set either hsm.token or hsm.token_serial, not both")
	}
	switch {
	case c.HSM.PINFile == "" && c.HSM.PINEnv == "":
		bad("hsm.pin_file", "required (a 0600 file), or set hsm.pin_env")
	case c.HSM.PINFile != "" && c.HSM.PINEnv != "":
		bad("hsm.pin_env", "set either hsm.pin_file or hsm.pin_env, not both")
	}
	if c.HSM.Sessions < 1 || c.HSM.Sessions > 256 {
		bad("hsm.sessions", "%d is outside 1..256", c.HSM.Sessions)
	}
	if d := time.Duration(c.HSM.IdleTimeout); d < time.Second {
		bad("hsm.idle_timeout", "%s is shorter than 1s", d)
	}

	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level", "%q is not one of debug, info, warn, error", c.Log.Level)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		bad("log.format", "%q is not one of text, json", c.Log.Format)
	}
	if d := time.Duration(c.DrainTimeout); d < 100*time.Millisecond || d > 10*time.Minute {
		bad("drain_timeout", "%s is outside 100ms..10m", d)
	}
	return errors.Join(errs...)
}

// checkAddr reports a host:port that does not parse or has a port outside 1..65535.
func checkAddr(bad func(string, string, ...any), field, addr string, required bool) {
	if addr == "" {
		if required {
			bad(field, "required (host:port)")
		}
		return
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		bad(field, "address %s: not host:port", addr)
		return
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		bad(field, "address %s: invalid port", addr)
	}
}

// checkPublicURL checks an absolute URL of the scheme given, whose host a client
// can reach (the default made from an unspecified listen address cannot be).
func checkPublicURL(bad func(string, string, ...any), field, raw, listen, scheme string) {
	if raw == "" {
		return
	}
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		bad(field, "%q is not a URL", raw)
	case u.Scheme != scheme || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil:
		bad(field, "%q: want %s://host[:port]/path without query, fragment or user", raw, scheme)
	case isUnspecified(u.Hostname()):
		bad(field, "%q names no host clients can reach (listen is %s); set %s", raw, listen, field)
	}
}

func isUnspecified(host string) bool {
	if host == "" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsUnspecified()
}
