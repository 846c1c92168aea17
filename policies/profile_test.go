package policies

import (
	"errors"
	"io/fs"
	"strings"
	"testing"
	"testing/fstest"
)

func shippedFile(t *testing.T, name string) string {
	t.Helper()
	b, err := fs.ReadFile(Shipped(), name)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// authWith is the shipped authentication profile with its template replaced.
func authWith(t *testing.T, template string) string {
	t.Helper()
	src := shippedFile(t, "authentication.yaml")
	i := strings.Index(src, "template: |\n")
	j := strings.Index(src, "keyUsage:")
	return src[:i] + "template: |\n" + template + src[j:]
}

func TestParseRefusesBasic4InAuthentication(t *testing.T) {
	// The template starts on line 10 of the shipped authentication profile.
	tests := []struct {
		name     string
		template string
		want     string // "file:line: field: …"
	}{
		{"name", "  {\"subject\": {\"commonName\": {{ toJson .JPKI.Name }}}}\n", "auth.yaml:10: template: .JPKI.Name is basic-4 data"},
		{"birth date on line 2", "  {\"subject\":\n   {\"commonName\": {{ .JPKI.BirthDate | toJson }}}}\n", "auth.yaml:11: template: .JPKI.BirthDate is basic-4 data"},
		{"address via with", "  {{ with .JPKI }}{\"subject\": {\"commonName\": {{ toJson .Address }}}}{{ end }}\n", "auth.yaml:10: template: .JPKI holds basic-4 data"},
		{"gender via root variable", "  {\"subject\": {\"commonName\": {{ toJson $.JPKI.Gender }}}}\n", "auth.yaml:10: template: .JPKI.Gender is basic-4 data"},
		{"all data to a function", "  {\"subject\": {\"commonName\": {{ toJson . | sha256sum | toJson }}}}\n", "auth.yaml:10: template: .JPKI holds basic-4 data"},
		{"root variable", "  {\"subject\": {\"commonName\": {{ toJson $ | sha256sum | toJson }}}}\n", "auth.yaml:10: template: .JPKI holds basic-4 data"},
		{"in a defined template", "  {{ define \"cn\" }}{{ toJson .JPKI.Address }}{{ end }}{\"subject\": {\"commonName\": {{ toJson .Pseudonym }}}}\n", "auth.yaml:10: template: .JPKI.Address is basic-4 data"},
		{"index into data", "  {\"subject\": {\"commonName\": {{ index . \"JPKI\" | toJson }}}}\n", "auth.yaml:10: template: .JPKI holds basic-4 data"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("auth.yaml", []byte(authWith(t, tc.template)))
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Parse: %v, want ErrInvalid", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Parse: %v\nwant it to say %q", err, tc.want)
			}
		})
	}
	// The same template is allowed in a signing profile.
	src := strings.Replace(authWith(t, tests[0].template), "kind: authentication", "kind: signing", 1)
	if _, err := Parse("sign.yaml", []byte(src)); err != nil {
		t.Errorf("signing profile with the name: %v", err)
	}
}

func TestParseNamesLineAndField(t *testing.T) {
	tests := []struct {
		name, old, new, want string
	}{
		{"key type", "rsa-2048", "rsa-1024", `authentication.yaml:7: keys[2]: "rsa-1024"`},
		{"kind", "kind: authentication", "kind: tls", `authentication.yaml:5: kind: "tls"`},
		{"validity", "validity: 8760h", "validity: 0s", "authentication.yaml:8: validity: must be positive"},
		{"key usage", "keyUsage: [digitalSignature]", "keyUsage: [keyCertSign]", `keyUsage[0]: "keyCertSign"`},
		{"nonRepudiation in authentication", "keyUsage: [digitalSignature]", "keyUsage: [digitalSignature, nonRepudiation]", "keyUsage: nonRepudiation is for signing profiles"},
		{"big OID arc", "1.3.6.1.4.1.32473.1.2", "2.25.223016430213473425419364208870232960257", "certificatePolicies[0]"},
		{"no revocation source", "sources: [crl, ocsp]", "sources: [none]", `enrollment.revocation.sources[0]: "none"`},
		{"cap", "maxCertificatesPerPerson: 5", "maxCertificatesPerPerson: 0", "enrollment.maxCertificatesPerPerson: must be 1 or more"},
		{"rate", "perClient: {every: 1m, burst: 10}", "perClient: {every: 1m, burst: 0}", "enrollment.rateLimits.perClient"},
		{"hold without grace", "{action: hold, grace: 720h, reason: affiliationChanged}", "{action: hold, reason: affiliationChanged}", "linkage.affiliationChanged.grace"},
		{"keyCompromise held", "keyCompromise: {action: revoke, reason: keyCompromise}", "keyCompromise: {action: hold, grace: 1h, reason: keyCompromise}", "linkage.keyCompromise.action: a compromised JPKI key"},
		{"bad reason", "reason: cessationOfOperation}", "reason: certificateHold}", `linkage.default.reason: "certificateHold"`},
		{"template sets CRL DP", `"subject": {"country": "JP", "commonName": {{ toJson .Pseudonym }}}`, `"subject": {"country": "JP", "commonName": {{ toJson .Pseudonym }}}, "crlDistributionPoints": ["http://x/"]`, "template: sets CRL distribution points"},
		{"template sets key usage", `"subject": {"country": "JP", "commonName": {{ toJson .Pseudonym }}}`, `"subject": {"country": "JP", "commonName": {{ toJson .Pseudonym }}}, "keyUsage": ["digitalSignature"]`, "template: sets keyUsage"},
		{"template syntax", "{{ toJson .Pseudonym }}", "{{ toJson .Pseudonym }", "authentication.yaml:10: template:"},
		{"unknown field", "validity: 8760h", "validity: 8760h\nvaliditty: 1h", "field validitty not found"},
		{"skipped lint without reason", "keyUsage: [digitalSignature]", "keyUsage: [digitalSignature]\nskipLints: [{name: w_no_such_lint}]", `skipLints[0].name: "w_no_such_lint" is not a zlint lint`},
	}
	src := shippedFile(t, "authentication.yaml")
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if !strings.Contains(src, tc.old) {
				t.Fatalf("the shipped file no longer holds %q", tc.old)
			}
			_, err := Parse("authentication.yaml", []byte(strings.Replace(src, tc.old, tc.new, 1)))
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Parse: %v\nwant it to say %q", err, tc.want)
			}
		})
	}
}

func TestParseReportsEveryProblem(t *testing.T) {
	src := shippedFile(t, "signing.yaml")
	src = strings.Replace(src, "version: 2", "version: 0", 1)
	src = strings.Replace(src, "rsa-4096", "dsa-1024", 1)
	_, err := Parse("signing.yaml", []byte(src))
	for _, want := range []string{"signing.yaml:7: version", "signing.yaml:10: keys[4]"} {
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), want) {
			t.Errorf("Parse: %v\nwant it to say %q", err, want)
		}
	}
}

func TestLoad(t *testing.T) {
	s := shippedSet(t)
	if got := strings.Join(s.Names(), ","); got != "authentication,signing" {
		t.Errorf("Names: %s", got)
	}
	if _, err := Load(Shipped(), make([]byte, 16), "signing"); !errors.Is(err, ErrInvalid) {
		t.Errorf("short pseudonym key: %v", err)
	}
	if _, err := Load(Shipped(), pseudonymKey, "tls"); !errors.Is(err, ErrInvalid) {
		t.Errorf("unknown default: %v", err)
	}
	dup := fstest.MapFS{
		"a.yaml": {Data: []byte(shippedFile(t, "signing.yaml"))},
		"b.yaml": {Data: []byte(shippedFile(t, "signing.yaml"))},
	}
	if _, err := Load(dup, pseudonymKey, "signing"); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "defined twice") {
		t.Errorf("duplicate profile: %v", err)
	}
}

func TestDiff(t *testing.T) {
	s := shippedSet(t)
	active, _ := s.Profile("signing")
	if d := active.Diff(active); d != "" {
		t.Errorf("Diff of a profile with itself: %q", d)
	}
	// Comments and layout do not count; content does.
	src := strings.Replace(shippedFile(t, "signing.yaml"), "# signing:", "# reworded comment\n# signing:", 1)
	same, err := Parse("signing.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	if d := active.Diff(same); d != "" {
		t.Errorf("Diff after a comment change: %q", d)
	}
	src = strings.Replace(strings.Replace(src, "version: 2", "version: 3", 1), "maxCertificatesPerPerson: 3", "maxCertificatesPerPerson: 2", 1)
	next, err := Parse("signing.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	d := active.Diff(next)
	for _, want := range []string{"--- signing v2 (active)\n+++ signing v3 (candidate)\n", "- version: 2\n+ version: 3\n", "-   maxCertificatesPerPerson: 3\n+   maxCertificatesPerPerson: 2\n", "  kind: signing\n"} {
		if !strings.Contains(d, want) {
			t.Errorf("Diff lacks %q:\n%s", want, d)
		}
	}
	if strings.Contains(d, "does not follow") {
		t.Errorf("Diff complains of a version that moved forward:\n%s", d)
	}
	if d := next.Diff(active); !strings.Contains(d, "! version 2 does not follow the active 3") {
		t.Errorf("Diff back to an older version does not say so:\n%s", d)
	}
}
