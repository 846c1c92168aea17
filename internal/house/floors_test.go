package house

import (
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
)

const module = "github.com/inkan-pki/inkan"

// floors is shared/DESIGN.md's table of import floors: for each package of the
// module (its path in the module), the packages of ours it may import. "x/…"
// stands for x and every package under it; "below" for every package of a
// lower floor. Packages the table does not name are listed after it, each with
// why it sits where it does.
var floors = []floorRow{
	// cmd/inkan also opens HSM tokens itself (`inkan hsm`, `inkan join-keys`
	// before a node exists) and gives the stand-in J-LIS its card holders'
	// data in jpki's types: flag parsing around one call each.
	{7, []string{"cmd/inkan"}, []string{"node", "admin", "subscriber", "audit", "jpki/jpkisim", "jpki", "hsm", "certserial"}, ""},
	{6, []string{"node"}, []string{"below"}, ""},
	// admin also reads the profiles' policy types (policies) and the TSA's
	// state (tsa) for its answers: both lower floors than admin's.
	{5, []string{"admin"}, []string{"operator", "ocsp", "ca/…", "tsa", "policies", "audit/log", "audit", "cluster", "hsm", "certserial"}, ""},
	{4, []string{"ocsp", "tsa"}, []string{"ca/…", "cluster", "hsm", "certserial"}, ""},
	{3, []string{"ca", "ca/enroll", "ca/crl", "ca/linkage", "ca/policy"}, []string{"ca/…", "policies", "jpki", "cluster", "hsm", "certserial", "enrollapi"}, ""},
	{3, []string{"operator", "audit/log"}, []string{"audit", "cluster", "hsm", "certserial"}, ""},
	{2, []string{"policies"}, []string{"jpki"}, ""},
	{2, []string{"cluster"}, []string{"hsm"}, ""},
	{2, []string{"cluster/clustertest"}, []string{"cluster", "hsm/…"}, "the multi-node harness of the tests of cluster and the packages above it"},
	{2, []string{"subscriber"}, []string{"hsm", "jpki", "enrollapi", "certserial"}, ""},
	{1, []string{"jpki", "audit"}, []string{"certserial"}, ""},
	{1, []string{"jpki/jpkisim"}, []string{"jpki", "hsm/…"}, ""},
	{1, []string{"enrollapi"}, nil, "the enrollment API's wire format, which both ca/enroll and subscriber speak"},
	{1, []string{"hsm/softhsm"}, []string{"hsm"}, "SoftHSM2 tokens for tests and the demo"},
	{0, []string{"hsm"}, nil, ""},
	{0, []string{"certserial"}, nil, "the one printed form of a certificate serial: every floor prints serials (a leaf)"},
	{0, []string{"crlreason"}, nil, "RFC 5280's revocation reasons, one type and one table of names for every floor (a leaf)"},
	{0, []string{"internal/yamlshape"}, nil, "the configuration file's shape check, generic YAML; node's config uses it"},
	{0, []string{"internal/house", "internal/testenv"}, nil, "for tests only"},
	{8, []string{"deploy/bench/ocspserve"}, []string{"below"}, "a benchmark's server, above everything it measures"},
	{8, []string{"deploy/bench/peer"}, []string{"subscriber", "enrollapi", "hsm"}, "the peer benchmark's load generator: a client of the enrollment API, as inkan enroll is"},
}

type floorRow struct {
	floor    int
	pkgs     []string
	mayUse   []string
	unlisted string // why a package outside DESIGN.md's table sits here
}

// TestImportFloors fails if a package of the module imports one of ours that
// shared/DESIGN.md's floors do not allow, or if a package has no floor.
func TestImportFloors(t *testing.T) {
	root := moduleRoot(t)
	floorOf := map[string]int{}
	for _, f := range floors {
		for _, p := range f.pkgs {
			floorOf[p] = f.floor
		}
	}
	imports := moduleImports(t, root)
	var pkgs []string
	for p := range imports {
		pkgs = append(pkgs, p)
	}
	sort.Strings(pkgs)
	var problems []string
	for _, p := range pkgs {
		i := slices.IndexFunc(floors, func(f floorRow) bool { return slices.Contains(f.pkgs, p) })
		if i < 0 {
			problems = append(problems, p+": no floor (add it to DESIGN.md's table and to this test)")
			continue
		}
		f := floors[i]
		for _, imp := range imports[p] {
			if !allowed(f.floor, f.mayUse, imp, floorOf) {
				problems = append(problems, p+" imports "+imp)
			}
		}
	}
	if len(problems) > 0 {
		t.Errorf("imports that shared/DESIGN.md's floors do not allow:\n  %s", strings.Join(problems, "\n  "))
	}
}

// leaves import nothing of ours and name one thing every floor speaks of;
// any package may import them.
var leaves = []string{"certserial", "crlreason"}

func allowed(floor int, mayUse []string, imp string, floorOf map[string]int) bool {
	if slices.Contains(leaves, imp) {
		return true
	}
	for _, m := range mayUse {
		switch {
		case m == imp:
			return true
		case strings.HasSuffix(m, "/…") && (imp == strings.TrimSuffix(m, "/…") || strings.HasPrefix(imp, strings.TrimSuffix(m, "…"))):
			return true
		case m == "below":
			if f, ok := floorOf[imp]; ok && f < floor {
				return true
			}
		}
	}
	return false
}

// moduleImports maps each package of the module (its path in the module) with
// non-test Go files to the packages of ours those files import.
func moduleImports(t *testing.T, root string) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if path != root && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata" || d.Name() == "vendor") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		f, err := parser.ParseFile(token.NewFileSet(), path, src, parser.ImportsOnly)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, filepath.Dir(path))
		pkg := filepath.ToSlash(rel)
		if _, ok := out[pkg]; !ok {
			out[pkg] = nil
		}
		for _, is := range f.Imports {
			p, _ := strconv.Unquote(is.Path.Value)
			if p == module || strings.HasPrefix(p, module+"/") {
				p = strings.TrimPrefix(strings.TrimPrefix(p, module), "/")
				if !slices.Contains(out[pkg], p) {
					out[pkg] = append(out[pkg], p)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}
