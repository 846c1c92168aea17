package node

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
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
	cfg, err := ParseConfig([]byte(goodConfig))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Cluster.Advertise != "127.0.0.1:7400" {
		t.Errorf("advertise default = %q, want the bind address", cfg.Cluster.Advertise)
	}
	if cfg.Cluster.Role != RoleVoter || cfg.HSM.Sessions != 4 || cfg.Log.Level != "info" {
		t.Errorf("defaults not applied: %+v", cfg)
	}
	if cfg.HSM.Module != "/usr/lib/softhsm/libsofthsm2.so" {
		t.Errorf("module default = %q", cfg.HSM.Module)
	}
	r := cfg.Cluster.Raft
	if r.HeartbeatTimeout != Duration(time.Second) || r.ElectionTimeout != Duration(time.Second) ||
		r.LeaderLeaseTimeout != Duration(500*time.Millisecond) || r.SnapshotThreshold != 8192 {
		t.Errorf("raft defaults not applied: %+v", r)
	}
	if cfg.DrainTimeout != Duration(10*time.Second) {
		t.Errorf("drain_timeout default = %s", time.Duration(cfg.DrainTimeout))
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
	cfg, err := ParseConfig(raw)
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
		{"unknown key", repl("  token: inkan-node1", "  tokn: inkan-node1"), "field tokn not found"},
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
			"cluster.raft.leader_lease_timeout: 2s is longer than cluster.raft.heartbeat_timeout (1s)"},
		{"heartbeat too short", repl("  bootstrap: true", "  bootstrap: true\n  raft:\n    heartbeat_timeout: 1ms\n    leader_lease_timeout: 1ms"),
			"cluster.raft.heartbeat_timeout: 1ms is shorter than 10ms"},
		{"unknown raft key", repl("  bootstrap: true", "  bootstrap: true\n  raft:\n    election: 1s"), "field election not found"},
		{"archive years too many", repl("  listen: 127.0.0.1:8080", "  listen: 127.0.0.1:8080\n  archive_years: 101"), "ocsp.archive_years: 101 is outside 1..100"},
		{"archive years negative", repl("  listen: 127.0.0.1:8080", "  listen: 127.0.0.1:8080\n  archive_years: -1"), "ocsp.archive_years: -1 is outside 1..100"},
		{"drain timeout too long", func(s string) string { return s + "drain_timeout: 1h\n" }, "drain_timeout: 1h0m0s is outside 100ms..10m"},
		{"data dir too long for the socket", repl("/var/lib/inkan", "/"+strings.Repeat("d", 100)), "is too long for the admin socket admin.sock inside it"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(tc.edit(goodConfig)))
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
	_, err := ParseConfig([]byte(raw))
	if err == nil {
		t.Fatal("accepted")
	}
	for _, field := range []string{"metrics.listen:", "cluster.node_id:", "cluster.raft.election_timeout:", "drain_timeout:"} {
		if !strings.Contains(err.Error(), field) {
			t.Errorf("error does not name %s:\n%v", field, err)
		}
	}
}
