package policies

import (
	"errors"
	"io/fs"
	"testing"
)

// FuzzParse: whatever a profile file holds, Parse returns a profile or an error
// matching ErrInvalid, and never panics; a profile it accepts renders.
func FuzzParse(f *testing.F) {
	for _, name := range []string{"signing.yaml", "authentication.yaml"} {
		b, err := fs.ReadFile(Shipped(), name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("name: [x\n"))
	f.Add([]byte("linkage: {default: {action: hold}}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Parse("fuzz.yaml", data)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error not matching ErrInvalid: %v", err)
			}
			return
		}
		if _, err := renderTemplate(p, "00", &identityData{Name: "x"}); err != nil {
			t.Fatalf("accepted profile does not render: %v", err)
		}
		_ = p.Normalize()
	})
}
