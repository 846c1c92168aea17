package yamlshape

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Error is one problem with a YAML file, in the file's words: the option's
// YAML path as written ("cluster.raft.election_timeout", "jpki.anchors[1]";
// empty for a file that is not YAML) and the line it is on (0 when the option
// is absent).
type Error struct {
	Path string
	Line int
	Msg  string
}

func (e *Error) Error() string {
	var b strings.Builder
	if e.Line > 0 {
		fmt.Fprintf(&b, "line %d: ", e.Line)
	}
	if e.Path != "" {
		b.WriteString(e.Path + ": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Errors lists the Errors in err (a single one or errors.Join of them).
func Errors(err error) []*Error {
	var out []*Error
	var walk func(error)
	walk = func(err error) {
		switch e := err.(type) {
		case *Error:
			out = append(out, e)
		case interface{ Unwrap() []error }:
			for _, e := range e.Unwrap() {
				walk(e)
			}
		case interface{ Unwrap() error }:
			walk(e.Unwrap())
		}
	}
	walk(err)
	return out
}

// Decode reads raw into v (a pointer to a struct). Before yaml.v3 decodes it,
// the document is checked against v's shape (shapeCheck), so that a misspelt option, a list
// where a value belongs or a word where a number belongs is reported with its
// path, its line and what the option takes — never a Go type name, which is all
// yaml.v3's own errors give. A file that is not YAML is reported at the line
// where it stops being YAML (yaml.v3 reports a parser's error a line early).
//
// It then runs check, if not nil (the caller's defaults and validation of v):
// each Error check returns without a line gets the line of its path in raw,
// when raw gives the option.
func Decode(raw []byte, v any, check func() error) error {
	doc, err := decode(raw, v)
	if err != nil || check == nil {
		return err
	}
	if err := check(); err != nil {
		for _, e := range Errors(err) {
			if e.Line == 0 {
				e.Line = lineOf(doc, e.Path)
			}
		}
		return err
	}
	return nil
}

// decode is Decode without the check, returning the document for lineOf.
func decode(raw []byte, v any) (*yaml.Node, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		return nil, &Error{Line: syntaxLine(raw), Msg: "not valid YAML: " + yamlReason(err)}
	}
	if doc.Kind == 0 { // an empty file: every option takes its default
		return &doc, nil
	}
	var errs []error
	sc := &shapeCheck{bad: func(path string, line int, format string, args ...any) {
		errs = append(errs, &Error{Path: path, Line: line, Msg: fmt.Sprintf(format, args...)})
	}}
	sc.check(&doc, reflect.TypeOf(v).Elem(), "", 0)
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil {
		// shapeCheck passes only what decodes; should it miss a case, the
		// problem is still reported, in yaml.v3's words.
		return nil, &Error{Msg: "does not decode: " + yamlReason(err)}
	}
	return &doc, nil
}

// syntaxLine finds the line where raw stops being YAML: the line after the
// longest prefix of whole lines that parses. yaml.v3's message gives a parser
// error's position 0-based (a line early), or the start of the enclosing
// block, so it is not used.
func syntaxLine(raw []byte) int {
	lines := bytes.SplitAfter(raw, []byte("\n"))
	for m := len(lines) - 1; m > 0; m-- {
		var n yaml.Node
		if yaml.Unmarshal(bytes.Join(lines[:m], nil), &n) == nil {
			return m + 1
		}
	}
	return 1
}

var yamlPrefix = regexp.MustCompile(`^yaml: (line \d+: )?`)

// yamlReason is yaml.v3's description of a syntax error without its prefix and
// line (syntaxLine gives the line). yaml.v3 offers no structured error for
// syntax, only this text.
func yamlReason(err error) string {
	return yamlPrefix.ReplaceAllString(err.Error(), "")
}

var unmarshalerType = reflect.TypeOf((*yaml.Unmarshaler)(nil)).Elem()
var durationType = reflect.TypeOf(time.Duration(0))

// shapeCheck walks a YAML document against the Go type the decoder will fill,
// reporting through bad every option the type does not have, every option given
// twice and every value of the wrong kind, with its path and line. A null value
// (an option written with nothing after it) is its default. Aliases are followed;
// the walk is bounded in depth and in nodes, so no document of aliases (one that
// merges itself, or "billion laughs") can make it run long.
type shapeCheck struct {
	bad    func(path string, line int, format string, args ...any)
	visits int
}

const (
	maxShapeDepth  = 32
	maxShapeVisits = 100_000
)

func (sc *shapeCheck) check(n *yaml.Node, t reflect.Type, path string, depth int) {
	bad := sc.bad
	if sc.visits++; sc.visits > maxShapeVisits || depth > maxShapeDepth {
		if sc.visits == maxShapeVisits+1 || depth == maxShapeDepth+1 {
			bad(path, n.Line, "the file's aliases nest or repeat too much to read")
		}
		sc.visits = maxShapeVisits + 2 // report once
		return
	}
	switch n.Kind {
	case yaml.DocumentNode:
		if len(n.Content) > 0 {
			sc.check(n.Content[0], t, path, depth+1)
		}
		return
	case yaml.AliasNode:
		sc.check(n.Alias, t, path, depth+1)
		return
	}
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		return
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if reflect.PointerTo(t).Implements(unmarshalerType) {
		// A type that reads itself (Duration) says what is wrong.
		if err := reflect.New(t).Interface().(yaml.Unmarshaler).UnmarshalYAML(n); err != nil {
			bad(path, n.Line, "%v", err)
		}
		return
	}
	switch t.Kind() {
	case reflect.Struct:
		fields := yamlFields(t)
		if n.Kind != yaml.MappingNode {
			bad(path, n.Line, "want its options (%s), not %s", strings.Join(fieldNames(fields), ", "), describe(n))
			return
		}
		seen := map[string]int{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.ShortTag() == "!!merge" { // <<: *defaults, or <<: [*a, *b]
				if v.Kind == yaml.SequenceNode {
					for _, m := range v.Content {
						sc.check(m, t, path, depth+1)
					}
				} else {
					sc.check(v, t, path, depth+1)
				}
				continue
			}
			p := joinPath(path, k.Value)
			if first, dup := seen[k.Value]; dup {
				bad(p, k.Line, "given twice (first on line %d)", first)
				continue
			}
			seen[k.Value] = k.Line
			ft, ok := fields[k.Value]
			if !ok {
				bad(p, k.Line, "unknown option%s; %s takes %s", suggest(k.Value, fields), orFile(path), strings.Join(fieldNames(fields), ", "))
				continue
			}
			sc.check(v, ft, p, depth+1)
		}
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			bad(path, n.Line, "want a list ([a, b], or one \"- item\" a line), not %s", describe(n))
			return
		}
		for i, e := range n.Content {
			sc.check(e, t.Elem(), fmt.Sprintf("%s[%d]", path, i), depth+1)
		}
	default:
		want := kindWords(t)
		if n.Kind != yaml.ScalarNode {
			bad(path, n.Line, "want %s, not %s", want, describe(n))
			return
		}
		if err := n.Decode(reflect.New(t).Interface()); err != nil {
			bad(path, n.Line, "%q is not %s", n.Value, want)
		}
	}
}

// yamlFields maps the YAML names of t's fields (as yaml.v3 names them) to their types.
func yamlFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" {
			continue
		}
		if slices.Contains(strings.Split(opts, ","), "inline") {
			for k, v := range yamlFields(f.Type) {
				out[k] = v
			}
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		out[name] = f.Type
	}
	return out
}

func fieldNames(fields map[string]reflect.Type) []string {
	names := make([]string, 0, len(fields))
	for k := range fields {
		names = append(names, k)
	}
	slices.Sort(names)
	return names
}

// suggest names the option closest to a misspelt one, if one is close.
func suggest(name string, fields map[string]reflect.Type) string {
	best, dist := "", 3
	for _, k := range fieldNames(fields) {
		if d := editDistance(name, k); d < dist {
			best, dist = k, d
		}
	}
	if best == "" && len(name) >= 4 {
		for _, k := range fieldNames(fields) {
			if strings.HasPrefix(k, name) { // election for election_timeout
				best = k
				break
			}
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %s?)", best)
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func orFile(path string) string {
	if path == "" {
		return "the file"
	}
	return path
}

func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// kindWords says what a value of t is, in a reader's words.
func kindWords(t reflect.Type) string {
	if t == durationType {
		return "a duration (e.g. 30s, 5m)"
	}
	switch t.Kind() {
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "a whole number"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a whole number, 0 or more"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.String:
		return "a single value"
	}
	return "a value"
}

// describe says what a node is, to contrast it with what was wanted.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping of options"
	case yaml.SequenceNode:
		return "a list"
	}
	return strconv.Quote(n.Value)
}

// lineOf is the line of the option at path in doc (as Error writes paths), or
// 0 if the file does not give it.
func lineOf(doc *yaml.Node, path string) int {
	n := doc
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	line := 0
	for _, part := range strings.Split(path, ".") {
		key, index, hasIndex := strings.Cut(part, "[")
		if n.Kind == yaml.AliasNode {
			n = n.Alias
		}
		if n.Kind != yaml.MappingNode {
			return 0
		}
		var next *yaml.Node
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == key {
				line, next = n.Content[i].Line, n.Content[i+1]
			}
		}
		if next == nil {
			return 0
		}
		n = next
		if hasIndex {
			i, err := strconv.Atoi(strings.TrimSuffix(index, "]"))
			if n.Kind != yaml.SequenceNode || err != nil || i < 0 || i >= len(n.Content) {
				return 0
			}
			n = n.Content[i]
			line = n.Line
		}
	}
	return line
}
