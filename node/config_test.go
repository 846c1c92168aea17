package node

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/inkan-pki/inkan/internal/yamlshape"
)

const goodConfig = `
data_dir: /var/lib/inkan
cluster:
  name: inkan-test
  bind: 127.0.0.1:7400
  bootstrap: true
api:
  listen: 127.0.0.1:8443
ocsp:
  listen: 127.0.0.1:8080
metrics:
  listen: 127.0.0.1:9090
hsm:
  token: inkan-node1
  pin_file: /etc/inkan/hsm.pin
`

func TestParseConfigDefaults(t *testing.T) {
	cfg, err := parseConfig([]byte(goodConfig))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Cluster.Advertise != "127.0.0.1:7400" {
		t.Errorf("advertise default = %q, want the bind address", cfg.Cluster.Advertise)
	}
	if cfg.Cluster.Role != roleVoter || cfg.HSM.Sessions != 4 || cfg.Log.Level != "info" {
		t.Errorf("defaults not applied: %+v", cfg)
	}
	if cfg.HSM.Module != "/usr/lib/softhsm/libsofthsm2.so" {
		t.Errorf("module default = %q", cfg.HSM.Module)
	}
	r := cfg.Cluster.Raft
	if r.HeartbeatTimeout != duration(500*time.Millisecond) || r.ElectionTimeout != duration(500*time.Millisecond) ||
		r.LeaderLeaseTimeout != duration(250*time.Millisecond) || r.SnapshotThreshold != 8192 {
		t.Errorf("raft defaults not applied: %+v", r)
	}
	if e := cfg.Enroll; e.RequestRate != 1 || e.RequestBurst != 10 {
		t.Errorf("enrollment request limit defaults not applied: %v/s, burst %d", e.RequestRate, e.RequestBurst)
	}
	if cfg.DrainTimeout != duration(10*time.Second) {
		t.Errorf("drain_timeout default = %s", time.Duration(cfg.DrainTimeout))
	}
	if cfg.Enroll.ClientPrefixV4 != 24 || cfg.Enroll.ClientPrefixV6 != 56 || len(cfg.Enroll.trustedProxies()) != 0 {
		t.Errorf("enroll defaults: %+v", cfg.Enroll)
	}
	if got := cfg.AdminSocket(); got != "/var/lib/inkan/admin.sock" {
		t.Errorf("admin socket = %q", got)
	}
}

// TestParseConfigExample keeps deploy/examples/node.yaml loadable: it documents
// every option, so it must stay a valid file.
func TestParseConfigExample(t *testing.T) {
	raw, err := os.ReadFile("../deploy/examples/node.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := parseConfig(raw)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Cluster.Join == nil || cfg.Cluster.NodeID == "" || cfg.Metrics.Listen == "" {
		t.Errorf("example lost options: %+v", cfg)
	}
}

func TestParseConfigErrors(t *testing.T) {
	cases := []struct {
		name    string
		edit    func(string) string
		wantErr string
	}{
		{"invalid port", repl("127.0.0.1:7400", "127.0.0.1:99999"), "cluster.bind: address 127.0.0.1:99999: invalid port"},
		{"not host:port", repl("127.0.0.1:8443", "localhost"), "api.listen: address localhost: not host:port"},
		{"missing data dir", repl("data_dir: /var/lib/inkan", ""), "data_dir: required"},
		{"relative data dir", repl("/var/lib/inkan", "var/lib"), "data_dir: \"var/lib\" must be an absolute path"},
		{"unknown key", repl("  token: inkan-node1", "  tokn: inkan-node1"), "hsm.tokn: unknown option (did you mean token?)"},
		{"both pin sources", repl("  pin_file: /etc/inkan/hsm.pin", "  pin_file: /etc/inkan/hsm.pin\n  pin_env: PIN"), "hsm.pin_env: set either"},
		{"no pin source", repl("  pin_file: /etc/inkan/hsm.pin", ""), "hsm.pin_file: required"},
		{"bad role", repl("  bootstrap: true", "  bootstrap: true\n  role: leader"), "cluster.role: \"leader\" is not one of"},
		{"bootstrap and join", repl("  bootstrap: true", "  bootstrap: true\n  join:\n    address: 127.0.0.1:7401\n    token_file: /t"), "cluster.join: a bootstrapping node does not join"},
		{"join without token", repl("  bootstrap: true", "  join:\n    address: 127.0.0.1:7401"), "cluster.join.token_file: required"},
		{"same address twice", repl("127.0.0.1:8080", "127.0.0.1:8443"), "ocsp.listen: address 127.0.0.1:8443 is already used by api.listen"},
		{"unspecified advertise", repl("bind: 127.0.0.1:7400", "bind: 0.0.0.0:7400"), "cluster.advertise: \"0.0.0.0:7400\" is not an address other nodes can dial"},
		{"bad duration", repl("  token: inkan-node1", "  token: inkan-node1\n  idle_timeout: soon"), "\"soon\" is not a duration"},
		{"bad log level", func(s string) string { return s + "log:\n  level: loud\n" }, "log.level: \"loud\" is not one of"},
		{"multi-line cluster name", repl("name: inkan-test", "name: \"a\\nb\""), "cluster.name: must be a single line"},
		{"missing metrics listener", repl("metrics:\n  listen: 127.0.0.1:9090\n", ""), "metrics.listen: required (host:port)"},
		{"metrics on the ocsp port", repl("127.0.0.1:9090", "127.0.0.1:8080"), "metrics.listen: address 127.0.0.1:8080 is already used by ocsp.listen"},
		{"bad node id", repl("  bootstrap: true", "  bootstrap: true\n  node_id: Node_1"), "cluster.node_id: \"Node_1\": use 1-64 of a-z, 0-9 and '-'"},
		{"election shorter than heartbeat", repl("  bootstrap: true", "  bootstrap: true\n  raft:\n    heartbeat_timeout: 2s\n    election_timeout: 1s"),
			"cluster.raft.election_timeout: 1s is shorter than cluster.raft.heartbeat_timeout (2s)"},
		{"lease longer than heartbeat", repl("  bootstrap: true", "  bootstrap: true\n  raft:\n    leader_lease_timeout: 2s"),
			"cluster.raft.leader_lease_timeout: 2s is longer than cluster.raft.heartbeat_timeout (500ms)"},
		{"heartbeat too short", repl("  bootstrap: true", "  bootstrap: true\n  raft:\n    heartbeat_timeout: 1ms\n    leader_lease_timeout: 1ms"),
			"cluster.raft.heartbeat_timeout: 1ms is shorter than 10ms"},
		{"unknown raft key", repl("  bootstrap: true", "  bootstrap: true\n  raft:\n    election: 1s"), "cluster.raft.election: unknown option (did you mean election_timeout?)"},
		{"archive years too many", repl("  listen: 127.0.0.1:8080", "  listen: 127.0.0.1:8080\n  archive_years: 101"), "ocsp.archive_years: 101 is outside 1..100"},
		{"archive years negative", repl("  listen: 127.0.0.1:8080", "  listen: 127.0.0.1:8080\n  archive_years: -1"), "ocsp.archive_years: -1 is outside 1..100"},
		{"drain timeout too long", func(s string) string { return s + "drain_timeout: 1h\n" }, "drain_timeout: 1h0m0s is outside 100ms..10m"},
		{"data dir too long for the socket", repl("/var/lib/inkan", "/"+strings.Repeat("d", 100)), "is too long for the admin socket admin.sock inside it"},
		{"IPv4 client prefix", func(s string) string { return s + "enroll:\n  client_prefix_v4: 33\n" }, "enroll.client_prefix_v4: 33 is outside 1..32"},
		{"IPv6 client prefix", func(s string) string { return s + "enroll:\n  client_prefix_v6: -1\n" }, "enroll.client_prefix_v6: -1 is outside 1..128"},
		{"request rate", func(s string) string { return s + "enroll:\n  request_rate: -2\n" }, "enroll.request_rate: -2 is negative (-1 turns the limit off)"},
		{"request burst", func(s string) string { return s + "enroll:\n  request_burst: -3\n" }, "enroll.request_burst: -3 is less than 1"},
		{"trusted proxy", func(s string) string { return s + "enroll:\n  trusted_proxies: [10.0.0.0/8, proxy.example]\n" },
			`enroll.trusted_proxies[1]: "proxy.example" is not an address or a CIDR network`},
		{"revocation age within a refresh", func(s string) string {
			return s + "jpki:\n  anchors: [/etc/inkan/jlis.pem]\n  revocation: {kind: crl, file: /x.crl, refresh: 10m}\n  max_revocation_age: 10m\n"
		}, "jpki.max_revocation_age: 10m0s must be longer than jpki.revocation.refresh (10m0s)"},
		{"tsa without a policy", func(s string) string { return s + "tsa:\n  accuracy: 1s\n" }, "tsa.policy: \"\": required"},
		{"tsa policy not an OID", func(s string) string { return s + "tsa:\n  policy: 1.3.six\n" }, "tsa.policy: \"1.3.six\": arc 3 (\"six\") is not a decimal number"},
		{"tsa policy first arc", func(s string) string { return s + "tsa:\n  policy: 3.1\n" }, "tsa.policy: \"3.1\": not an OID"},
		{"tsa accuracy too fine", func(s string) string { return s + "tsa:\n  policy: 1.2.3\n  accuracy: 10us\n" }, "tsa.accuracy: 10µs is outside 1ms..1m0s"},
		{"tsa on a nonvoter", func(s string) string {
			return repl("  bootstrap: true", "  join:\n    address: 127.0.0.1:7401\n    token_file: /t\n  role: nonvoter")(s) + "tsa:\n  policy: 1.2.3\n"
		}, "tsa: a nonvoter holds no replicated key"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseConfig([]byte(tc.edit(goodConfig)))
			if err == nil {
				t.Fatalf("accepted; want error containing %q", tc.wantErr)
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %q does not contain %q", err, tc.wantErr)
			}
		})
	}
}

func TestLoadConfigNamesFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "node.yaml")
	if err := os.WriteFile(path, []byte(strings.Replace(goodConfig, "7400", "0", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := LoadConfig(path)
	if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "cluster.bind") {
		t.Fatalf("error %v should name the file and the field", err)
	}
}

func repl(old, new string) func(string) string {
	return func(s string) string {
		if !strings.Contains(s, old) {
			panic("test edit does not apply: " + old)
		}
		return strings.Replace(s, old, new, 1)
	}
}

// TestParseConfigReportsEveryProblem: one load names every bad field, so an
// operator fixes the file in one pass.
func TestParseConfigReportsEveryProblem(t *testing.T) {
	raw := strings.NewReplacer(
		"127.0.0.1:9090", "127.0.0.1:0",
		"  bootstrap: true", "  bootstrap: true\n  node_id: X\n  raft:\n    election_timeout: 1ms",
	).Replace(goodConfig) + "drain_timeout: 1ms\n"
	_, err := parseConfig([]byte(raw))
	if err == nil {
		t.Fatal("accepted")
	}
	for _, field := range []string{"metrics.listen:", "cluster.node_id:", "cluster.raft.election_timeout:", "drain_timeout:"} {
		if !strings.Contains(err.Error(), field) {
			t.Errorf("error does not name %s:\n%v", field, err)
		}
	}
}

// TestConfigErrorsNamePathAndLine: every problem with the file is a FieldError
// with the option's path as written and its line (the line the mistake is on,
// also for a file that is not YAML), in words: never a Go type name.
func TestConfigErrorsNamePathAndLine(t *testing.T) {
	// goodConfig's lines: 2 data_dir, 3 cluster:, 4 name, 5 bind, 6 bootstrap,
	// 7 api:, 8 listen, 9 ocsp:, 10 listen, 11 metrics:, 12 listen, 13 hsm:,
	// 14 token, 15 pin_file.
	cases := []struct {
		name, edit  string // edit replaces goodConfig's line 10 ("  listen: 127.0.0.1:8080")
		path        string
		line        int
		msgContains string
	}{
		{"unknown option", "  listen: 127.0.0.1:8080\n  bogus: 1", "ocsp.bogus", 11, "unknown option; ocsp takes archive_years, listen, public_url, rate"},
		{"misspelt option", "  lisen: 127.0.0.1:8080", "ocsp.lisen", 10, "(did you mean listen?)"},
		{"word for a number", "  listen: 127.0.0.1:8080\n  rate: lots", "ocsp.rate", 11, `"lots" is not a number`},
		{"word for a duration", "  listen: 127.0.0.1:8080\n  validity: long", "ocsp.validity", 11, `"long" is not a duration`},
		{"list for a value", "  listen: [127.0.0.1:8080]", "ocsp.listen", 10, "want a single value, not a list"},
		{"value for a section", "  listen: 127.0.0.1:8080\n  rate: {a: 1}", "ocsp.rate", 11, "want a number, not a mapping of options"},
		{"option twice", "  listen: 127.0.0.1:8080\n  listen: 127.0.0.1:8081", "ocsp.listen", 11, "given twice (first on line 10)"},
		{"validation", "  listen: 127.0.0.1:99999", "ocsp.listen", 10, "address 127.0.0.1:99999: invalid port"},
		{"validation of a default", "  listen: 127.0.0.1:8080\n  refresh_after: 200h", "ocsp.refresh_after", 11, "must be positive and shorter than ocsp.validity"},
		{"not YAML: bad indentation", "  listen: 127.0.0.1:8080\n bad: 1", "", 11, "not valid YAML: "},
		{"not YAML: a list item among options", "  listen: 127.0.0.1:8080\n  - x", "", 11, "not valid YAML: "},
		{"not YAML: a tab", "\tlisten: 127.0.0.1:8080", "", 10, "not valid YAML: "},
		{"not YAML: unclosed flow list", "  listen: [127.0.0.1:8080", "", 10, "not valid YAML: "},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			raw := repl("  listen: 127.0.0.1:8080", tc.edit)(goodConfig)
			_, err := parseConfig([]byte(raw))
			fes := yamlshape.Errors(err)
			if len(fes) != 1 {
				t.Fatalf("error %v: want one FieldError", err)
			}
			fe := fes[0]
			if fe.Path != tc.path || fe.Line != tc.line || !strings.Contains(fe.Msg, tc.msgContains) {
				t.Fatalf("got %+v (%q); want path %q line %d saying %q", *fe, fe, tc.path, tc.line, tc.msgContains)
			}
			if strings.Contains(err.Error(), "node.") || strings.Contains(err.Error(), "jpki.Config") ||
				strings.Contains(err.Error(), "float64") || strings.Contains(err.Error(), "!!") {
				t.Errorf("error %q shows Go's or YAML's internals", err)
			}
		})
	}

	// A problem with an option the file does not give has no line; several are
	// listed one a line under the file's name.
	path := filepath.Join(t.TempDir(), "node.yaml")
	raw := repl("  name: inkan-test\n", "")(repl("  listen: 127.0.0.1:8080", "  listen: 127.0.0.1:0")(goodConfig))
	if err := os.WriteFile(path, []byte(raw), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := LoadConfig(path)
	fes := yamlshape.Errors(err)
	if len(fes) != 2 || fes[0].Path != "cluster.name" || fes[0].Line != 0 || fes[1].Path != "ocsp.listen" || fes[1].Line != 9 {
		t.Fatalf("%v: want cluster.name without a line and ocsp.listen on line 9", err)
	}
	want := "config " + path + ": 2 problems:\n  cluster.name: required (it names the cluster in audit checkpoints)\n  line 9: ocsp.listen: address 127.0.0.1:0: invalid port"
	if err.Error() != want {
		t.Fatalf("error:\n%s\nwant:\n%s", err, want)
	}
}

// TestConfigAliases: anchors and merges are read like the rest, and a document
// whose aliases merge themselves is refused, not walked for ever.
func TestConfigAliases(t *testing.T) {
	good := goodConfig + "log: &l\n  level: debug\naudit:\n  <<: *l\n"
	_, err := parseConfig([]byte(good))
	if fes := yamlshape.Errors(err); len(fes) != 1 || fes[0].Path != "audit.level" {
		t.Fatalf("merge of log's options into audit: %v; want audit.level unknown", err)
	}
	loop := goodConfig + "log: &l\n  level: debug\n  <<: *l\n"
	if _, err := parseConfig([]byte(loop)); len(yamlshape.Errors(err)) == 0 {
		t.Fatalf("a self-merging mapping: %v; want a FieldError", err)
	}
}

// FuzzParseConfig: any document is accepted or refused with FieldErrors only
// (no raw yaml.v3 error, no panic), quickly.
func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(goodConfig))
	f.Add([]byte("a: &x\n  b: *x\n"))
	f.Add([]byte("cluster: &c\n  <<: *c\n"))
	f.Add([]byte("ocsp:\n  rate: [1, {a: b}]\n\tx: 1\n"))
	f.Add([]byte("jpki:\n  anchors: [a, b]\n  revocation: {kind: crl}\n"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		if len(raw) > 4096 {
			return
		}
		_, err := parseConfig(raw)
		if err != nil && len(yamlshape.Errors(err)) == 0 {
			t.Fatalf("error %v is not a FieldError", err)
		}
	})
}
