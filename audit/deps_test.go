package audit

import (
	"go/build"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestImportsNothingOfTheNode holds the promise of doc.go: an auditor vendors this
// package alone. Its code and its tests import, of inkan, only certserial (the one
// spelling of serials, itself importing nothing of ours), and of the rest only the
// standard library and the formats' own libraries: no cluster, no bbolt, no Raft,
// nothing of the node (that is audit/log's).
func TestImportsNothingOfTheNode(t *testing.T) {
	const module = "github.com/inkan-pki/inkan"
	ours := map[string]bool{module + "/audit": true, module + "/certserial": true}
	others := []string{"github.com/fxamacker/cbor/", "github.com/transparency-dev/merkle/", "golang.org/x/crypto/"}
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("module root: %v", err)
	}
	seen := map[string]bool{}
	var walk func(pkg string, tests bool)
	walk = func(pkg string, tests bool) {
		if seen[pkg] {
			return
		}
		seen[pkg] = true
		if !ours[pkg] {
			t.Errorf("%s is imported (by audit or what it imports): an auditor would need it too", pkg)
			return
		}
		p, err := build.ImportDir(filepath.Join(root, strings.TrimPrefix(pkg, module)), 0)
		if err != nil {
			t.Fatalf("%s: %v", pkg, err)
		}
		imports := p.Imports
		if tests {
			imports = slices.Concat(imports, p.TestImports, p.XTestImports)
		}
		for _, imp := range imports {
			switch {
			case imp == pkg:
			case strings.HasPrefix(imp, module+"/"):
				walk(imp, false)
			case !strings.Contains(strings.Split(imp, "/")[0], "."): // the standard library
			case !slices.ContainsFunc(others, func(o string) bool { return strings.HasPrefix(imp+"/", o) }):
				t.Errorf("%s imports %s", pkg, imp)
			}
		}
	}
	walk(module+"/audit", true)
	if !seen[module+"/certserial"] {
		t.Log("audit no longer imports certserial: drop it from this test")
	}
}
