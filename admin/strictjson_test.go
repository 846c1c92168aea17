package admin

import (
	"encoding/json"
	"errors"
	"testing"
)

type strictInner struct {
	Country string `json:"country"`
}

type strictBody struct {
	Serials []string    `json:"serials"`
	Reason  string      `json:"reason"`
	Count   int         `json:"count,omitempty"`
	Subject strictInner `json:"subject"`
	Blob    []byte      `json:"blob,omitempty"`
}

// TestDecodeStrict: each way two readers of one body could disagree is refused,
// naming the member at fault; a body without them decodes.
func TestDecodeStrict(t *testing.T) {
	for _, c := range []struct {
		name, body, field string
	}{
		{"trailing object", `{"serials":["01"],"reason":"keyCompromise"}{"serials":["02"]}`, ""},
		{"trailing garbage", `{"serials":["01"],"reason":"keyCompromise"} x`, ""},
		{"duplicate member", `{"serials":["01"],"serials":["01","02"],"reason":"keyCompromise"}`, "serials"},
		{"escaped duplicate", `{"serials":["01"],"ser\u0069als":["01","02"],"reason":"keyCompromise"}`, "serials"},
		{"case variant", `{"Serials":["01","02"],"reason":"keyCompromise"}`, "Serials"},
		{"case variant beside the member", `{"serials":["01"],"SERIALS":["01","02"],"reason":"keyCompromise"}`, "SERIALS"},
		{"unknown member", `{"serials":["01"],"reason":"keyCompromise","force":true}`, "force"},
		{"nested duplicate", `{"serials":[],"reason":"x","subject":{"country":"JP","country":"US"}}`, "subject.country"},
		{"nested unknown", `{"serials":[],"reason":"x","subject":{"county":"JP"}}`, "subject.county"},
		{"wrong type", `{"serials":"01","reason":"keyCompromise"}`, "serials"},
		{"wrong element type", `{"serials":[1],"reason":"keyCompromise"}`, "serials"},
		{"number for a string", `{"serials":[],"reason":7}`, "reason"},
		{"not an object", `["serials"]`, ""},
		{"empty", ``, ""},
		{"not JSON", `{serials: 1}`, ""},
		{"a good body (the control)", `{"serials":[],"reason":"x","subject":{"country":"JP"},"blob":"AA=="}`, "-"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var v strictBody
			err := decodeStrict([]byte(c.body), &v)
			if c.field == "-" { // the control: a good body
				if err != nil {
					t.Fatalf("good body refused: %v", err)
				}
				return
			}
			var fe *fieldError
			if !errors.As(err, &fe) {
				t.Fatalf("decodeStrict(%s) = %v, want a *fieldError", c.body, err)
			}
			if fe.Field != c.field {
				t.Fatalf("field %q (%v), want %q", fe.Field, err, c.field)
			}
		})
	}
	deep := `{"serials":[],"reason":"x","subject":` + nest(20) + `}`
	var v strictBody
	if err := decodeStrict([]byte(deep), &v); err == nil {
		t.Fatal("a body nested 20 deep decoded")
	}
	good := `{"serials":["01","0a"],"reason":"keyCompromise","subject":{"country":"JP"}}`
	if err := decodeStrict([]byte(good), &v); err != nil || len(v.Serials) != 2 || v.Subject.Country != "JP" {
		t.Fatalf("good body: %+v %v", v, err)
	}
}

func nest(n int) string {
	if n == 0 {
		return "1"
	}
	return `{"a":` + nest(n-1) + `}`
}

// FuzzDecodeStrict: the admin API's body decoder never panics, and whatever it
// accepts re-encodes to a body it accepts and decodes to the same value — the
// canonical body a proposal records decodes to what was counted.
func FuzzDecodeStrict(f *testing.F) {
	for _, s := range []string{
		`{"serials":["01"],"reason":"keyCompromise"}`,
		`{"serials":["01"],"serials":["02"]}`,
		`{"Serials":[]}`,
		`{"serials":[],"reason":"x","subject":{"country":"JP"}} {}`,
		`{"ser\u0069als":["01"]}`,
		`{"blob":"AAEC","count":3}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var v strictBody
		if decodeStrict(body, &v) != nil {
			return
		}
		canon, err := json.Marshal(&v)
		if err != nil {
			t.Fatal(err)
		}
		var again strictBody
		if err := decodeStrict(canon, &again); err != nil {
			t.Fatalf("canonical body %s refused: %v", canon, err)
		}
		canon2, _ := json.Marshal(&again)
		if string(canon) != string(canon2) {
			t.Fatalf("canonical body not stable: %s then %s", canon, canon2)
		}
	})
}
