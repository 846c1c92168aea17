package house

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// TestNoErrorTextComparison fails if any non-test Go file of the module
// compares an error by its message: an Error() call as an operand of == or !=,
// as a switch's tag or case, or inside a string test (strings.Contains,
// HasPrefix, Index, EqualFold, Cut…), or as the pattern of strings.TrimPrefix
// and its kin (stripping another error's words). A reworded message must not
// change what the code does; errors.Is and errors.As say what an error is.
func TestNoErrorTextComparison(t *testing.T) {
	var found []string
	walkSources(t, func(rel string, src []byte) {
		found = append(found, errorTextComparisons(t, rel, src)...)
	})
	if len(found) > 0 {
		t.Errorf("errors compared by their text (use a sentinel, a typed error or a cluster.Refusal, and errors.Is/As):\n  %s",
			strings.Join(found, "\n  "))
	}
}

// TestErrorTextComparisonFinds checks the check: each case is a file, and the
// lines it must report.
func TestErrorTextComparisonFinds(t *testing.T) {
	for _, tc := range []struct {
		name string
		body string
		want []int // lines of the body (1 is the first line after "func f() {")
	}{
		{"contains", `_ = strings.Contains(err.Error(), "exists")`, []int{1}},
		{"contains a sentinel's words", `_ = strings.Contains(err.Error(), ErrX.Error())`, []int{1}},
		{"equal", `_ = err.Error() == "x"`, []int{1}},
		{"not equal, two errors", `_ = last.Error() != err.Error()`, []int{1}},
		{"equal inside a concatenation", `_ = msg == s.Error()+": "`, []int{1}},
		{"has prefix", `_ = strings.HasPrefix(err.Error(), "cluster:")`, []int{1}},
		{"index", `_ = strings.Index(msg, s.Error()+": ")`, []int{1}},
		{"equal fold", `_ = strings.EqualFold(e.Error(), "x")`, []int{1}},
		{"cut prefix", `_, _ = strings.CutPrefix(err.Error(), "x")`, []int{1}},
		{"trim another error's words", `_ = strings.TrimPrefix(err.Error(), ErrX.Error()+": ")`, []int{1}},
		{"switch on the text", "switch err.Error() {\ncase \"x\":\n}", []int{1}},
		{"case of a sentinel's text", "switch msg {\ncase ErrX.Error():\n}", []int{2}},
		{"regexp match", `_ = re.MatchString(err.Error())`, []int{1}},
		{"future compared with nil", `_ = f.Error() != nil`, nil},
		{"message in a log", `log.Error("x", "err", err.Error())`, nil},
		{"message as a detail", `p.Detail = err.Error()`, nil},
		{"trim a fixed prefix", `_ = strings.TrimPrefix(err.Error(), "template: ")`, nil},
		{"replace new lines", `_ = strings.ReplaceAll(e.Error(), "\n", "\n  ")`, nil},
		{"contains on another string", `_ = strings.Contains(s, "x")`, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := "package p\n\nfunc f() {\n" + tc.body + "\n}\n"
			var got []int
			for _, f := range errorTextComparisons(t, "p.go", []byte(src)) {
				line, err := strconv.Atoi(strings.Split(f, ":")[1])
				if err != nil {
					t.Fatalf("report %q: %v", f, err)
				}
				got = append(got, line-3)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("reported lines %v, want %v", got, tc.want)
			}
		})
	}
}

// errorTextComparisons reports "file:line: what" for each comparison of an
// Error() call's result in src.
func errorTextComparisons(t *testing.T, file string, src []byte) []string {
	t.Helper()
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, file, src, parser.SkipObjectResolution)
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	var out []string
	report := func(n ast.Node, what string) {
		out = append(out, fset.Position(n.Pos()).String()+": "+what)
	}
	ast.Inspect(f, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.BinaryExpr:
			if (n.Op == token.EQL || n.Op == token.NEQ) && !isNil(n.X) && !isNil(n.Y) &&
				(hasErrorCall(n.X) || hasErrorCall(n.Y)) {
				report(n, "Error() compared with "+n.Op.String())
			}
		case *ast.SwitchStmt:
			if n.Tag != nil && hasErrorCall(n.Tag) {
				report(n.Tag, "switch on Error()")
			}
			if n.Tag != nil {
				for _, s := range n.Body.List {
					for _, e := range s.(*ast.CaseClause).List {
						if hasErrorCall(e) {
							report(e, "case of Error()")
						}
					}
				}
			}
		case *ast.CallExpr:
			sel, ok := n.Fun.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			if pkg, ok := sel.X.(*ast.Ident); ok && pkg.Name == "strings" {
				switch sel.Sel.Name {
				case "Contains", "ContainsAny", "ContainsRune", "ContainsFunc", "HasPrefix", "HasSuffix",
					"Index", "IndexAny", "IndexByte", "IndexRune", "LastIndex", "LastIndexAny",
					"EqualFold", "Compare", "Count", "Cut", "CutPrefix", "CutSuffix":
					if slices.ContainsFunc(n.Args, hasErrorCall) {
						report(n, "strings."+sel.Sel.Name+" on Error()")
					}
				case "TrimPrefix", "TrimSuffix", "Replace", "ReplaceAll", "Split", "SplitN", "SplitAfter":
					if len(n.Args) > 1 && hasErrorCall(n.Args[1]) {
						report(n, "strings."+sel.Sel.Name+" by another error's words")
					}
				}
				return true
			}
			if sel.Sel.Name == "MatchString" && slices.ContainsFunc(n.Args, hasErrorCall) {
				report(n, "a pattern matched against Error()")
			}
		}
		return true
	})
	return out
}

// hasErrorCall says whether e holds a call x.Error() (a method of no arguments).
func hasErrorCall(e ast.Expr) bool {
	found := false
	ast.Inspect(e, func(n ast.Node) bool {
		if c, ok := n.(*ast.CallExpr); ok && len(c.Args) == 0 {
			if sel, ok := c.Fun.(*ast.SelectorExpr); ok && sel.Sel.Name == "Error" {
				found = true
			}
		}
		return !found
	})
	return found
}

func isNil(e ast.Expr) bool {
	id, ok := ast.Unparen(e).(*ast.Ident)
	return ok && id.Name == "nil"
}

// moduleRoot is the directory of the module's go.mod, above this package's.
func moduleRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test's directory")
		}
		dir = parent
	}
}
