package yamlshape

import (
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

type duration time.Duration

func (d *duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	*d = duration(v)
	return err
}

type inner struct {
	Timeout duration `yaml:"election_timeout"`
	Peers   []string `yaml:"peers"`
}

type shape struct {
	Name  string `yaml:"name"`
	Port  uint16 `yaml:"port"`
	Raft  inner  `yaml:"raft"`
	Debug bool   `yaml:"debug"`
}

// TestDecode: each problem is one Error with the option's path, its line and
// what the option takes; a good document decodes.
func TestDecode(t *testing.T) {
	for _, c := range []struct {
		name, doc string
		path      string
		line      int    // 0: any line
		msg       string // a part of the message
	}{
		{"good", "name: a\nport: 80\nraft:\n  election_timeout: 2s\n  peers: [a, b]\n", "", 0, ""},
		{"empty file", "", "", 0, ""},
		{"misspelt", "name: a\nprot: 80\n", "prot", 2, "did you mean port?"},
		{"prefix of an option", "raft:\n  election: 2s\n", "raft.election", 2, "did you mean election_timeout?"},
		{"given twice", "name: a\nname: b\n", "name", 2, "given twice (first on line 1)"},
		{"word for a number", "port: eighty\n", "port", 1, "is not a whole number, 0 or more"},
		{"list for a value", "name: [a, b]\n", "name", 1, "want a single value, not a list"},
		{"value for a list", "raft:\n  peers: a\n", "raft.peers", 2, "want a list"},
		{"value for options", "raft: 3\n", "raft", 1, "want its options (election_timeout, peers)"},
		{"bad duration", "raft:\n  election_timeout: soon\n", "raft.election_timeout", 2, "invalid duration"},
		{"list item", "raft:\n  peers: [a, [b]]\n", "raft.peers[1]", 2, "want a single value"},
		{"not YAML", "name: a\nport: [\n", "", 2, "not valid YAML"},
		{"self-merging alias", "raft: &a\n  <<: *a\n", "raft", 0, "aliases nest or repeat too much"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var v shape
			_, err := decode([]byte(c.doc), &v)
			if c.msg == "" {
				if err != nil {
					t.Fatalf("Decode = %v, want nil", err)
				}
				return
			}
			es := Errors(err)
			if len(es) != 1 {
				t.Fatalf("Decode = %v, want one Error", err)
			}
			if e := es[0]; e.Path != c.path || (c.line != 0 && e.Line != c.line) || !strings.Contains(e.Msg, c.msg) {
				t.Errorf("Error = {%q, %d, %q}, want {%q, %d, …%q…}", e.Path, e.Line, e.Msg, c.path, c.line, c.msg)
			}
		})
	}
}

// TestLineOf finds an option's line by its path, list indexes included.
func TestLineOf(t *testing.T) {
	doc := "name: a\nraft:\n  peers:\n    - a\n    - b\n"
	var n yaml.Node
	if err := yaml.Unmarshal([]byte(doc), &n); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]int{"name": 1, "raft.peers": 3, "raft.peers[1]": 5, "raft.none": 0, "raft.peers[2]": 0} {
		if got := lineOf(&n, path); got != want {
			t.Errorf("lineOf(%s) = %d, want %d", path, got, want)
		}
	}
}
