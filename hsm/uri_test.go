package hsm_test

import (
	"bytes"
	"errors"
	"reflect"
	"testing"

	"github.com/inkan-pki/inkan/hsm"
)

func TestURIRoundTrip(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name string
		in   string
		want hsm.URI
		out  string // String() of the parsed URI; in when empty
	}{
		{"empty", "pkcs11:", hsm.URI{}, ""},
		{"inkan's own", "pkcs11:token=inkan-ca;object=ca-2026;id=%01;type=private",
			hsm.URI{Token: "inkan-ca", Object: "ca-2026", ID: []byte{1}, Type: "private"}, ""},
		{"percent-encoded id, lower case hex", "pkcs11:id=%ca%fe%00%ff",
			hsm.URI{ID: []byte{0xca, 0xfe, 0x00, 0xff}}, "pkcs11:id=%CA%FE%00%FF"},
		{"id as text", "pkcs11:id=ab", hsm.URI{ID: []byte("ab")}, "pkcs11:id=%61%62"},
		{"step-ca style", "pkcs11:id=7331;object=ca-key?module-path=/usr/lib/softhsm/libsofthsm2.so",
			hsm.URI{ID: []byte("7331"), Object: "ca-key", ModulePath: "/usr/lib/softhsm/libsofthsm2.so"},
			"pkcs11:object=ca-key;id=%37%33%33%31?module-path=/usr/lib/softhsm/libsofthsm2.so"},
		{"OpenSC style with serial and other attributes",
			"pkcs11:model=SoftHSM%20v2;manufacturer=SoftHSM%20project;serial=25a2e1d059f2bba1;token=t1;id=%02;object=key%201;type=public",
			hsm.URI{Token: "t1", Serial: "25a2e1d059f2bba1", Object: "key 1", ID: []byte{2}, Type: "public"},
			"pkcs11:token=t1;serial=25a2e1d059f2bba1;model=SoftHSM%20v2;manufacturer=SoftHSM%20project;object=key%201;id=%02;type=public"},
		{"reserved characters escaped in labels", "pkcs11:object=a%3Bb%3Fc%25d%2Fe",
			hsm.URI{Object: "a;b?c%d/e"}, ""},
		{"characters allowed raw stay raw", "pkcs11:object=a:b@c!$'()*+,=&~", hsm.URI{Object: "a:b@c!$'()*+,=&~"}, ""},
		{"utf-8 label", "pkcs11:token=%E5%8D%B0%E9%91%91", hsm.URI{Token: "印鑑"}, ""},
		{"pin-source kept", "pkcs11:token=a?pin-source=file:/etc/inkan/pin&x-vendor=1",
			hsm.URI{Token: "a", PINSource: "file:/etc/inkan/pin"}, ""},
		{"scheme in upper case", "PKCS11:token=a", hsm.URI{Token: "a"}, "pkcs11:token=a"},
		{"empty values", "pkcs11:token=;object=", hsm.URI{}, "pkcs11:"},
	} {
		t.Run(c.name, func(t *testing.T) {
			u, err := hsm.ParseURI(c.in)
			if err != nil {
				t.Fatal(err)
			}
			if u.Token != c.want.Token || u.Serial != c.want.Serial || u.Object != c.want.Object ||
				!bytes.Equal(u.ID, c.want.ID) || u.Type != c.want.Type || u.ModulePath != c.want.ModulePath ||
				u.PINSource != c.want.PINSource {
				t.Errorf("ParseURI(%q) = %+v, want %+v", c.in, u, c.want)
			}
			want := c.out
			if want == "" {
				want = c.in
			}
			if got := u.String(); got != want {
				t.Errorf("String() = %q, want %q", got, want)
			}
			again, err := hsm.ParseURI(u.String())
			if err != nil {
				t.Fatalf("re-parse %q: %v", u.String(), err)
			}
			if !reflect.DeepEqual(normal(again), normal(u)) {
				t.Errorf("re-parse of %q = %+v, want %+v", u.String(), again, u)
			}
		})
	}
}

// normal makes an empty ID and a nil one compare equal.
func normal(u hsm.URI) hsm.URI {
	if len(u.ID) == 0 {
		u.ID = nil
	}
	return u
}

func TestURIParseErrors(t *testing.T) {
	t.Parallel()
	for _, in := range []string{
		"",
		"pkcs11",
		"file:token=a",
		"pkcs11:token",
		"pkcs11:=a",
		"pkcs11:token=a;token=b",
		"pkcs11:token=a;;object=b",
		"pkcs11:id=%0",
		"pkcs11:id=%zz",
		"pkcs11:type=secret",
		"pkcs11:token=a?pin-value=1234",
		"pkcs11:token=a?",
		"pkcs11:token=a\n",
		"pkcs11:token=a#frag",
		"pkcs11:Token=a",
		"pkcs11:token=a?module-path=x&module-path=y",
	} {
		if u, err := hsm.ParseURI(in); !errors.Is(err, hsm.ErrURI) {
			t.Errorf("ParseURI(%q) = %+v, %v, want ErrURI", in, u, err)
		}
	}
}

func TestURIText(t *testing.T) {
	t.Parallel()
	var u hsm.URI
	if err := u.UnmarshalText([]byte("pkcs11:token=inkan-ca;id=%01")); err != nil {
		t.Fatal(err)
	}
	b, err := u.MarshalText()
	if err != nil || string(b) != "pkcs11:token=inkan-ca;id=%01" {
		t.Fatalf("MarshalText = %q, %v", b, err)
	}
}

// FuzzParseURI: URIs come from configuration and other nodes. Parsing never
// panics, and whatever parses formats to a URI that parses to the same thing and
// formats the same again.
func FuzzParseURI(f *testing.F) {
	for _, s := range []string{
		"pkcs11:token=inkan-ca;object=ca-2026;id=%01;type=private",
		"pkcs11:id=%ca%fe?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=/etc/pin",
		"pkcs11:model=SoftHSM%20v2;x-vendor=a?x-q=b|c/d",
		"pkcs11:object=a%3Bb",
		"pkcs11:",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := hsm.ParseURI(s)
		if err != nil {
			return
		}
		out := u.String()
		again, err := hsm.ParseURI(out)
		if err != nil {
			t.Fatalf("ParseURI(%q) ok, but its String %q does not parse: %v", s, out, err)
		}
		if !reflect.DeepEqual(normal(again), normal(u)) {
			t.Fatalf("%q -> %+v -> %q -> %+v", s, u, out, again)
		}
		if again.String() != out {
			t.Fatalf("String not stable: %q then %q", out, again.String())
		}
	})
}
