package admin

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
)

// Admin request bodies are decoded once, strictly, into the value that both the
// rules of dual control and the handler use, and a proposed request records
// that value's own encoding: what is counted and approved is what runs.
// encoding/json alone is lenient in ways that let two readers of one body
// disagree — it takes the last of two members of one name, matches member names
// without regard to case, and stops before trailing data — so decodeStrict walks
// the document first and refuses each of those, naming the member at fault.

// fieldError is a body that does not decode strictly: Field is the member's path
// in the document ("serials[3]", "subject.country"; "" for the body as a whole).
type fieldError struct {
	Field  string
	Reason string
}

func (e *fieldError) Error() string {
	if e.Field == "" {
		return "body: " + e.Reason
	}
	return "body: " + e.Field + ": " + e.Reason
}

// maxDepth bounds how deep an admin request's JSON may nest.
const maxDepth = 16

// decodeStrict decodes body, a single JSON value, into v (a pointer to a
// struct), refusing: anything after the value; a member named twice in one
// object (after unescaping, so "a" and "\u0061" are the same name); a member the
// type does not have, or has under another case; a value of the wrong type; and
// nesting deeper than maxDepth.
func decodeStrict(body []byte, v any) error {
	t := reflect.TypeOf(v)
	if t == nil || t.Kind() != reflect.Pointer {
		return errors.New("admin: decodeStrict needs a pointer")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if err := walkValue(dec, t.Elem(), "", 0); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return &fieldError{Reason: "data after the JSON value"}
	}
	dec = json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return &fieldError{Field: te.Field, Reason: fmt.Sprintf("a JSON %s is not a %s", te.Value, describeType(te.Type))}
		}
		return &fieldError{Reason: err.Error()}
	}
	return nil
}

func describeType(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "string"
	case reflect.Bool:
		return "boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "whole number"
	case reflect.Slice, reflect.Array:
		if t.Elem().Kind() == reflect.Uint8 {
			return "base64 string"
		}
		return "list"
	case reflect.Map, reflect.Struct:
		return "object"
	}
	return t.String()
}

// walkValue reads one JSON value from dec, checking its objects' member names
// against t (nil: any value, names still checked for duplicates).
func walkValue(dec *json.Decoder, t reflect.Type, path string, depth int) error {
	if depth > maxDepth {
		return &fieldError{Field: path, Reason: fmt.Sprintf("nested deeper than %d", maxDepth)}
	}
	tok, err := dec.Token()
	if err != nil {
		if err == io.EOF {
			return &fieldError{Field: path, Reason: "no JSON value"}
		}
		return &fieldError{Field: path, Reason: "not JSON: " + err.Error()}
	}
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch tok {
	case json.Delim('{'):
		return walkObject(dec, t, path, depth)
	case json.Delim('['):
		var elem reflect.Type
		if t != nil && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) {
			elem = t.Elem()
		}
		for i := 0; dec.More(); i++ {
			if err := walkValue(dec, elem, fmt.Sprintf("%s[%d]", path, i), depth+1); err != nil {
				return err
			}
		}
		_, err := dec.Token() // ']'
		return err
	}
	return nil // a scalar: its type is checked by the decoding proper
}

func walkObject(dec *json.Decoder, t reflect.Type, path string, depth int) error {
	var fields map[string]reflect.Type
	var elem reflect.Type
	switch {
	case t == nil, t.Kind() == reflect.Interface:
	case t.Kind() == reflect.Struct:
		fields = jsonFields(t)
	case t.Kind() == reflect.Map:
		elem = t.Elem()
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return &fieldError{Field: path, Reason: "not JSON: " + err.Error()}
		}
		name, _ := tok.(string)
		at := name
		if path != "" {
			at = path + "." + name
		}
		if seen[name] {
			return &fieldError{Field: at, Reason: "given twice"}
		}
		seen[name] = true
		next := elem
		if fields != nil {
			ft, ok := fields[name]
			if !ok {
				if known := closeName(fields, name); known != "" {
					return &fieldError{Field: at, Reason: fmt.Sprintf("unknown member (names are case-sensitive: %q)", known)}
				}
				return &fieldError{Field: at, Reason: "unknown member"}
			}
			next = ft
		}
		if err := walkValue(dec, next, at, depth+1); err != nil {
			return err
		}
	}
	_, err := dec.Token() // '}'
	return err
}

// jsonFields maps a struct's JSON member names to their types, as
// encoding/json names them (embedded structs' members included).
func jsonFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() && !f.Anonymous {
			continue
		}
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" && f.Type.Kind() == reflect.Struct {
			for k, v := range jsonFields(f.Type) {
				out[k] = v
			}
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = f.Type
	}
	return out
}

func closeName(fields map[string]reflect.Type, name string) string {
	for k := range fields {
		if strings.EqualFold(k, name) {
			return k
		}
	}
	return ""
}
