package cluster

import (
	"path/filepath"
	"testing"
)

// TestSharedPath: a peer may read only plain relative paths under SharedDir,
// never the state, the Raft log or the node's certificates beside it.
func TestSharedPath(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		name, path string
		ok         bool
	}{
		{"a CRL file", "crl/ab/ab12.crl", true},
		{"up to the state", "../state.db", false},
		{"up inside", "crl/../../node.pem", false},
		{"absolute", "/etc/passwd", false},
		{"empty", "", false},
		{"the dir itself", ".", false},
		{"an empty element", "crl//x", false},
		{"a backslash", `crl\..\state.db`, false},
		{"a trailing slash", "crl/", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			p, ok := sharedPath(dir, c.path)
			if ok != c.ok {
				t.Fatalf("sharedPath(%q) = %q, %v; want ok=%v", c.path, p, ok, c.ok)
			}
			if ok {
				if rel, err := filepath.Rel(filepath.Join(dir, SharedDir), p); err != nil || rel != filepath.FromSlash(c.path) {
					t.Fatalf("sharedPath(%q) = %q, outside %s", c.path, p, SharedDir)
				}
			}
		})
	}
}

// FuzzSharedPath: whatever name a peer sends, a path sharedPath accepts lies
// under SharedDir.
func FuzzSharedPath(f *testing.F) {
	for _, s := range []string{"crl/ab/ab12.crl", "../state.db", "crl/../../x", "/abs", "", "."} {
		f.Add(s)
	}
	root := filepath.Join("/data", SharedDir)
	f.Fuzz(func(t *testing.T, name string) {
		p, ok := sharedPath("/data", name)
		if !ok {
			return
		}
		rel, err := filepath.Rel(root, p)
		if err != nil || rel == "." || !filepath.IsLocal(rel) {
			t.Fatalf("sharedPath(%q) = %q, not under %s", name, p, root)
		}
	})
}
