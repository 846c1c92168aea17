package house

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"go/types"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// maxExported bounds the module's exported surface: the top-level functions,
// types, variables and constants that library packages (every package but a
// command's main) export. Methods are not counted; they belong to their type.
// Each exported name is a promise to another package; a name only its own
// package uses should not be one.
const maxExported = 450

// TestExportedSurface counts the exported top-level names of the module's
// library packages and fails above maxExported, printing the count per
// package so that whoever adds names sees where the surface grows.
func TestExportedSurface(t *testing.T) {
	perPkg := map[string]int{}
	total := 0
	walkLibraryFiles(t, func(rel string, f *ast.File) {
		n := len(exportedTopLevel(f))
		perPkg[filepath.Dir(rel)] += n
		total += n
	})
	var lines []string
	for p, n := range perPkg {
		lines = append(lines, fmt.Sprintf("%4d %s", n, p))
	}
	slices.Sort(lines)
	t.Logf("exported top-level names: %d (bound %d)\n%s", total, maxExported, strings.Join(lines, "\n"))
	if total > maxExported {
		t.Errorf("%d exported top-level names, more than %d: unexport what no other package uses", total, maxExported)
	}
}

// maxNodeLines bounds node's non-test lines: node is configuration,
// lifecycle and wiring; what grows it past this is another package's job.
const maxNodeLines = 2500

// TestNodeIsWiring counts the lines of node's non-test Go files and fails above
// maxNodeLines.
func TestNodeIsWiring(t *testing.T) {
	root := moduleRoot(t)
	files, err := filepath.Glob(filepath.Join(root, "node", "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	lines := 0
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		lines += strings.Count(string(src), "\n")
	}
	t.Logf("node: %d non-test lines (bound %d)", lines, maxNodeLines)
	if lines == 0 || lines > maxNodeLines {
		t.Errorf("node has %d non-test lines, want 1..%d: move what is not wiring into its package", lines, maxNodeLines)
	}
}

// TestNoExportedFuncReturnsUnexported fails if an exported function, or an
// exported method of an exported type, returns a type its package does not
// export: a caller in another package gets a value it cannot name, store in a
// field, or find in the documentation.
func TestNoExportedFuncReturnsUnexported(t *testing.T) {
	var found []string
	walkLibraryFiles(t, func(rel string, f *ast.File) {
		for _, d := range f.Decls {
			fn, ok := d.(*ast.FuncDecl)
			if !ok || !fn.Name.IsExported() || fn.Type.Results == nil {
				continue
			}
			if fn.Recv != nil && !exportedReceiver(fn.Recv) {
				continue
			}
			params := typeParams(fn)
			for _, r := range fn.Type.Results.List {
				if name, ok := unexportedNamed(r.Type); ok && !params[name] {
					found = append(found, fmt.Sprintf("%s: %s returns %s", rel, fn.Name.Name, name))
				}
			}
		}
	})
	if len(found) > 0 {
		t.Errorf("exported functions returning unexported types:\n  %s", strings.Join(found, "\n  "))
	}
}

// walkLibraryFiles calls fn for each non-test Go file of a package that is not
// a command, with its path relative to the module root.
func walkLibraryFiles(t *testing.T, fn func(rel string, f *ast.File)) {
	t.Helper()
	fset := token.NewFileSet()
	walkSources(t, func(rel string, src []byte) {
		f, err := parser.ParseFile(fset, rel, src, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		if f.Name.Name != "main" {
			fn(rel, f)
		}
	})
}

// walkSources calls fn for each non-test Go file of the module (not under a
// dot directory, testdata or vendor), with its path relative to the module
// root and its source.
func walkSources(t *testing.T, fn func(rel string, src []byte)) {
	t.Helper()
	root := moduleRoot(t)
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() {
			if path != root && (strings.HasPrefix(name, ".") || name == "testdata" || name == "vendor") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		fn(rel, src)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// exportedTopLevel lists a file's exported top-level functions (not methods),
// types, variables and constants.
func exportedTopLevel(f *ast.File) []string {
	var names []string
	for _, d := range f.Decls {
		switch d := d.(type) {
		case *ast.FuncDecl:
			if d.Recv == nil && d.Name.IsExported() {
				names = append(names, d.Name.Name)
			}
		case *ast.GenDecl:
			for _, s := range d.Specs {
				switch s := s.(type) {
				case *ast.TypeSpec:
					if s.Name.IsExported() {
						names = append(names, s.Name.Name)
					}
				case *ast.ValueSpec:
					for _, n := range s.Names {
						if n.IsExported() {
							names = append(names, n.Name)
						}
					}
				}
			}
		}
	}
	return names
}

// typeParams names a function's type parameters and its receiver's.
func typeParams(fn *ast.FuncDecl) map[string]bool {
	names := map[string]bool{}
	if fn.Type.TypeParams != nil {
		for _, f := range fn.Type.TypeParams.List {
			for _, n := range f.Names {
				names[n.Name] = true
			}
		}
	}
	if fn.Recv != nil && len(fn.Recv.List) > 0 {
		t := fn.Recv.List[0].Type
		if s, ok := t.(*ast.StarExpr); ok {
			t = s.X
		}
		switch x := t.(type) {
		case *ast.IndexExpr:
			if id, ok := x.Index.(*ast.Ident); ok {
				names[id.Name] = true
			}
		case *ast.IndexListExpr:
			for _, i := range x.Indices {
				if id, ok := i.(*ast.Ident); ok {
					names[id.Name] = true
				}
			}
		}
	}
	return names
}

func exportedReceiver(recv *ast.FieldList) bool {
	if len(recv.List) == 0 {
		return false
	}
	t := recv.List[0].Type
	for {
		switch x := t.(type) {
		case *ast.StarExpr:
			t = x.X
		case *ast.IndexExpr:
			t = x.X
		case *ast.IndexListExpr:
			t = x.X
		case *ast.Ident:
			return x.IsExported()
		default:
			return false
		}
	}
}

// unexportedNamed reports the name of a package-local unexported type in a
// result type, looking through pointers, slices, arrays, maps and channels.
func unexportedNamed(e ast.Expr) (string, bool) {
	switch x := e.(type) {
	case *ast.StarExpr:
		return unexportedNamed(x.X)
	case *ast.ArrayType:
		return unexportedNamed(x.Elt)
	case *ast.MapType:
		if n, ok := unexportedNamed(x.Key); ok {
			return n, true
		}
		return unexportedNamed(x.Value)
	case *ast.ChanType:
		return unexportedNamed(x.Value)
	case *ast.IndexExpr:
		return unexportedNamed(x.X)
	case *ast.Ident:
		if x.IsExported() || types.Universe.Lookup(x.Name) != nil {
			return "", false
		}
		return x.Name, true
	}
	return "", false
}
