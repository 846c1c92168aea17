package policies

import (
	"bytes"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"strings"
	"sync"
	"text/template"
	"text/template/parse"

	"go.step.sm/crypto/x509util"
)

// templateData is what a profile's template sees. JPKI is absent for an
// authentication profile, so even a template that slipped past the load check could
// not reach basic-4 data.
func templateData(kind kind, pseudonym string, id *identityData) x509util.TemplateData {
	d := x509util.NewTemplateData()
	d.Set("Pseudonym", pseudonym)
	if kind != kindAuthentication && id != nil {
		d.Set("JPKI", map[string]any{
			"Name":               id.Name,
			"NameSubstitutes":    id.NameSubstitutes,
			"BirthDate":          id.BirthDate,
			"Gender":             id.Gender,
			"Address":            id.Address,
			"AddressSubstitutes": id.AddressSubstitutes,
		})
	}
	return d
}

// identityData is the basic-4 data as the template sees it.
type identityData struct {
	Name, NameSubstitutes, BirthDate, Gender, Address, AddressSubstitutes string
}

// checkTemplate parses the profile's template, refuses basic-4 data in an
// authentication profile, renders it once with stand-in data, and refuses contents
// that belong to the profile's own fields or to the CA.
func checkTemplate(pr *problems, yamlLine int, p *Profile) {
	// A block scalar's text starts on the line after its key.
	first := yamlLine + 1
	trees, err := template.New("template").Funcs(x509util.GetFuncMap()).Parse(p.Template)
	if err != nil {
		pr.add(first, "template", "%s", strings.TrimPrefix(err.Error(), "template: "))
		return
	}
	if p.Kind == kindAuthentication {
		for _, t := range trees.Templates() {
			if t.Tree == nil {
				continue
			}
			walk(t.Tree.Root, func(n parse.Node, field []string) {
				if len(field) == 0 {
					return
				}
				ln := first + strings.Count(p.Template[:min(int(n.Position()), len(p.Template))], "\n")
				switch {
				case field[0] == "JPKI" && len(field) == 1:
					pr.add(ln, "template", ".JPKI holds basic-4 data, refused in an authentication profile")
				case field[0] == "JPKI":
					pr.add(ln, "template", ".JPKI.%s is basic-4 data, refused in an authentication profile", field[1])
				}
			})
		}
	}
	// Render with stand-in data to find what the template sets.
	sample := &identityData{Name: "見本　太郎", NameSubstitutes: "00000", BirthDate: "2000-01-01", Gender: "male", Address: "東京都千代田区見本町一丁目1番1号", AddressSubstitutes: "0000000000000000"}
	c, err := renderTemplate(p, strings.Repeat("0", 64), sample)
	if err != nil {
		pr.add(first, "template", "%v", err)
		return
	}
	for _, f := range []struct {
		set  bool
		what string
	}{
		{c.KeyUsage != 0, "keyUsage (set it in the profile's keyUsage field)"},
		{len(c.ExtKeyUsage) > 0 || len(c.UnknownExtKeyUsage) > 0, "extKeyUsage (set it in the profile's extKeyUsage field)"},
		{len(c.PolicyIdentifiers) > 0 || len(c.Policies) > 0, "certificate policies (set them in certificatePolicies)"},
		{len(c.CRLDistributionPoints) > 0, "CRL distribution points (the CA sets them)"},
		{len(c.OCSPServer) > 0 || len(c.IssuingCertificateURL) > 0, "authority information access (the CA sets it)"},
		{c.IsCA || c.BasicConstraintsValid && c.MaxPathLen > 0, "basic constraints (a derived certificate is never a CA)"},
	} {
		if f.set {
			pr.add(first, "template", "sets %s", f.what)
		}
	}
	if len(c.Subject.ToRDNSequence()) == 0 {
		pr.add(first, "template", "renders an empty subject")
	}
	if p.Kind == kindAuthentication {
		// Belt and braces: the stand-in data must not appear in what renders.
		der, _ := asn1.Marshal(c.Subject.ToRDNSequence())
		all := string(der) + fmt.Sprint(c.EmailAddresses, c.DNSNames, c.URIs)
		for _, e := range c.ExtraExtensions {
			all += string(e.Value)
		}
		for _, v := range []string{sample.Name, sample.Address, sample.BirthDate, "20000101"} {
			if strings.Contains(all, v) {
				pr.add(first, "template", "renders basic-4 data, refused in an authentication profile")
				break
			}
		}
	}
}

// walk calls fn for every node of a template parse tree with the field chain it
// reads from the root data ("JPKI", "Name"), or nil.
func walk(n parse.Node, fn func(parse.Node, []string)) {
	if n == nil {
		return
	}
	switch n := n.(type) {
	case *parse.ListNode:
		if n == nil {
			return
		}
		for _, c := range n.Nodes {
			walk(c, fn)
		}
	case *parse.ActionNode:
		walk(n.Pipe, fn)
	case *parse.PipeNode:
		if n == nil {
			return
		}
		for _, d := range n.Decl {
			walk(d, fn)
		}
		for _, c := range n.Cmds {
			walk(c, fn)
		}
	case *parse.CommandNode:
		for _, a := range n.Args {
			walk(a, fn)
		}
	case *parse.FieldNode:
		fn(n, n.Ident)
	case *parse.VariableNode:
		// $.JPKI.Name reads from the root; other variables were assigned from
		// expressions walked where they were declared.
		switch {
		case len(n.Ident) > 1 && n.Ident[0] == "$":
			fn(n, n.Ident[1:])
		case len(n.Ident) == 1 && n.Ident[0] == "$":
			fn(n, []string{"JPKI"}) // all the data, as a bare dot
		}
	case *parse.ChainNode:
		walk(n.Node, fn)
		if d, ok := n.Node.(*parse.DotNode); ok {
			fn(d, n.Field)
		}
	case *parse.DotNode:
		// A bare dot may be all the data, JPKI included (inside with or range it is
		// not, but telling them apart is not worth a false negative: refuse both).
		fn(n, []string{"JPKI"})
	case *parse.IfNode:
		walkBranch(&n.BranchNode, fn)
	case *parse.RangeNode:
		walkBranch(&n.BranchNode, fn)
	case *parse.WithNode:
		walkBranch(&n.BranchNode, fn)
	case *parse.TemplateNode:
		walk(n.Pipe, fn)
	}
}

func walkBranch(b *parse.BranchNode, fn func(parse.Node, []string)) {
	walk(b.Pipe, fn)
	walk(b.List, fn)
	walk(b.ElseList, fn)
}

// renderTemplate runs the profile's template over the data and returns the
// certificate it describes (contents only: the CA sets the rest).
func renderTemplate(p *Profile, pseudonym string, id *identityData) (*x509.Certificate, error) {
	c, err := x509util.NewCertificateFromX509(placeholder(), withParsedTemplate(p.Template, templateData(p.Kind, pseudonym, id)))
	if err != nil {
		return nil, fmt.Errorf("render: %w", err)
	}
	return c.GetCertificate(), nil
}

// parsedTemplates holds each template text parsed with x509util's functions,
// by text: x509util.WithTemplate builds its function map (sprig's ~200
// functions) and parses the text on every call, which was ~100 µs of every
// enrolment. Texts are few (one per profile version), so nothing is evicted.
var parsedTemplates sync.Map // string → *template.Template

// withParsedTemplate is x509util.WithTemplate over a template parsed once. Its
// "fail" is not x509util's, which writes the message into a variable the
// function map shares: it returns the message as a templateFailure, which the
// run's error carries, so concurrent runs share no state.
func withParsedTemplate(text string, data x509util.TemplateData) x509util.Option {
	return func(cr *x509.CertificateRequest, o *x509util.Options) error {
		var t *template.Template
		if v, ok := parsedTemplates.Load(text); ok {
			t = v.(*template.Template)
		} else {
			funcs := x509util.GetFuncMap()
			funcs["fail"] = func(msg string) (string, error) { return "", &templateFailure{msg} }
			parsed, err := template.New("template").Funcs(funcs).Parse(text)
			if err != nil {
				return fmt.Errorf("error parsing template: %w", err)
			}
			parsedTemplates.Store(text, parsed)
			t = parsed
		}
		buf := new(bytes.Buffer)
		data.SetCertificateRequest(cr)
		if err := t.Execute(buf, data); err != nil {
			if f, ok := errors.AsType[*templateFailure](err); ok {
				return &x509util.TemplateError{Message: f.msg}
			}
			return fmt.Errorf("error executing template: %w", err)
		}
		o.CertBuffer = buf
		return nil
	}
}

// templateFailure is a template's {{ fail "message" }}.
type templateFailure struct{ msg string }

func (f *templateFailure) Error() string { return f.msg }

// placeholder is what x509util needs to run a template: no subject, no names, no
// key. Profiles take nothing from the subscriber's CSR (the CA takes its key), so
// .Insecure.CR holds nothing for a template to read.
func placeholder() *x509.Certificate {
	return &x509.Certificate{}
}
