package policies

import (
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"

	"go.step.sm/crypto/x509util"
)

// TestParsedTemplateIsX509utils: a template parsed once renders every shipped
// profile to the same certificate contents as x509util.WithTemplate, which
// parses it on every call.
func TestParsedTemplateIsX509utils(t *testing.T) {
	s := shippedSet(t)
	id := &identityData{Name: "山田 太郎", BirthDate: "19800102", Gender: "1", Address: "東京都千代田区"}
	for _, name := range s.Names() {
		p, _ := s.Profile(name)
		data := templateData(p.Kind, "0123abcd", id)
		want, err := x509util.NewCertificateFromX509(placeholder(), x509util.WithTemplate(p.Template, data))
		if err != nil {
			t.Fatalf("%s: x509util: %v", name, err)
		}
		for range 2 { // parsed, then from the cache
			got, err := renderTemplate(p, "0123abcd", id)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if !reflect.DeepEqual(got, want.GetCertificate()) {
				t.Fatalf("%s: rendered\n%+v\nwant\n%+v", name, got, want.GetCertificate())
			}
		}
	}
}

// TestParsedTemplateFailIsPerRun: a template's "fail" reports its own message
// to its own run, however many run at once (go test -race).
func TestParsedTemplateFailIsPerRun(t *testing.T) {
	text := `{{ if eq .Pseudonym "ok" }}{"subject": {"commonName": "ok"}}{{ else }}{{ fail (printf "refused %s" .Pseudonym) }}{{ end }}`
	var wg sync.WaitGroup
	for i := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pseudonym := "ok"
			if i%2 == 1 {
				pseudonym = fmt.Sprint(i)
			}
			d := x509util.NewTemplateData()
			d.Set("Pseudonym", pseudonym)
			c, err := x509util.NewCertificateFromX509(placeholder(), withParsedTemplate(text, d))
			var te *x509util.TemplateError
			switch {
			case pseudonym == "ok" && (err != nil || c.Subject.CommonName != "ok"):
				t.Errorf("run %d: %v", i, err)
			case pseudonym != "ok" && (!errors.As(err, &te) || te.Message != "refused "+pseudonym):
				t.Errorf("run %d: got %v, want the template's own refusal", i, err)
			}
		}()
	}
	wg.Wait()
}

// BenchmarkRenderTemplate renders the shipped authentication profile's
// template with x509util.WithTemplate (parsed per call, the baseline) and with
// the template parsed once, in the same run:
//
//	go test -run '^$' -bench BenchmarkRenderTemplate ./policies/
func BenchmarkRenderTemplate(b *testing.B) {
	s := shippedSet(b)
	p, _ := s.Profile("authentication")
	b.Run("x509util", func(b *testing.B) {
		for b.Loop() {
			if _, err := x509util.NewCertificateFromX509(placeholder(), x509util.WithTemplate(p.Template, templateData(p.Kind, "0123abcd", nil))); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parsed-once", func(b *testing.B) {
		for b.Loop() {
			if _, err := renderTemplate(p, "0123abcd", nil); err != nil {
				b.Fatal(err)
			}
		}
	})
}
