package audit

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/inkan-pki/inkan/certserial"
)

func TestLeafEncodingIsDeterministic(t *testing.T) {
	m := Meta{RaftIndex: 7, Time: testTime, Actor: ActorSystem}
	a := map[string]any{"a": 1, "bb": []byte{1}, "c": "x", "nested": map[string]any{"z": 1, "y": 2}}
	b := map[string]any{"nested": map[string]any{"y": 2, "z": 1}, "c": "x", "bb": []byte{1}, "a": 1}
	la, err := NewLeaf(m, "test.change", nil, a)
	if err != nil {
		t.Fatal(err)
	}
	lb, err := NewLeaf(m, "test.change", nil, b)
	if err != nil {
		t.Fatal(err)
	}
	ea, _ := EncodeLeaf(la)
	eb, _ := EncodeLeaf(lb)
	if !bytes.Equal(ea, eb) {
		t.Fatalf("same change, two encodings:\n%x\n%x", ea, eb)
	}
	back, err := ParseLeaf(ea)
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := EncodeLeaf(back); !bytes.Equal(again, ea) {
		t.Fatal("parse and encode again changed the leaf")
	}
	if !back.Time.Equal(testTime) || back.Actor != ActorSystem || back.RaftIndex != 7 {
		t.Fatalf("round trip: %+v", back)
	}

	// Non-deterministic encodings of the same leaf are refused.
	wire := leafWire{V: 1, RaftIndex: 7, Type: "test.change", Time: testTime, Actor: ActorSystem, Data: la.Data}
	for name, enc := range map[string]func() []byte{
		"unsorted keys": func() []byte {
			// "v" moved last: core deterministic order puts the shortest key first.
			em, _ := cborModes()
			sorted, _ := em.Marshal(wire)
			if !bytes.HasPrefix(sorted[1:], []byte{0x61, 'v', 0x01}) {
				t.Fatalf("v is not the first key: %x", sorted)
			}
			return append(append([]byte{sorted[0]}, sorted[4:]...), 0x61, 'v', 0x01)
		},
		"data not deterministic": func() []byte {
			w := wire
			w.Data = []byte{0xa2, 0x61, 'b', 0x01, 0x61, 'a', 0x02} // {"b":1,"a":2}
			em, _ := cborModes()
			b, _ := em.Marshal(w)
			return b
		},
		"long-form integer": func() []byte {
			w := wire
			w.Data = []byte{0x18, 0x01} // 1 encoded in two bytes
			em, _ := cborModes()
			b, _ := em.Marshal(w)
			return b
		},
	} {
		if _, err := ParseLeaf(enc()); err == nil {
			t.Errorf("%s: parsed", name)
		}
	}
}

func TestLeafFieldsAreChecked(t *testing.T) {
	ok := Leaf{Type: "test.change", Time: testTime, Actor: actorEnrollment}
	for name, mutate := range map[string]func(*Leaf){
		"actor is a name":           func(l *Leaf) { l.Actor = "Yamada Taro" },
		"actor fingerprint upper":   func(l *Leaf) { l.Actor = "sha256:" + string(bytes.Repeat([]byte("A"), 64)) },
		"actor fingerprint short":   func(l *Leaf) { l.Actor = "sha256:abcd" },
		"type with space":           func(l *Leaf) { l.Type = "cert issued" },
		"no time":                   func(l *Leaf) { l.Time = time.Time{} },
		"serial with leading zero":  func(l *Leaf) { l.Serial = "0abc" },
		"serial upper case":         func(l *Leaf) { l.Serial = "ABC" },
		"serial not hex":            func(l *Leaf) { l.Serial = "xyz" },
		"data not one CBOR item":    func(l *Leaf) { l.Data = []byte{0x01, 0x02} },
		"data not deterministic":    func(l *Leaf) { l.Data = []byte{0x18, 0x01} },
		"data with a tag":           func(l *Leaf) { l.Data = []byte{0xc1, 0x01} },
		"data with indefinite list": func(l *Leaf) { l.Data = []byte{0x9f, 0x01, 0xff} },
	} {
		l := ok
		mutate(&l)
		if _, err := EncodeLeaf(l); err == nil {
			t.Errorf("%s: encoded", name)
		}
	}
	if _, err := EncodeLeaf(ok); err != nil {
		t.Fatalf("the valid leaf: %v", err)
	}
}

func TestNormalizeSerial(t *testing.T) {
	// Every form certserial.Parse reads, in the leaves' own encoding; what it
	// refuses (zero too: no certificate has serial 0) is refused here.
	for in, want := range map[string]string{
		"a1b": "a1b", "0A:1B": "a1b", "0x0a1b": "a1b", "A1B": "a1b", "0a1b": "a1b", "000a1b": "a1b",
		"d0a5": "d0a5", "00d0a5": "d0a5", "00:D0:A5": "d0a5",
		" 0a 1b ": "", "00": "", "0": "", "": "", "0x": "", "xyz": "", "1g": "", "::": "", "a:1b": "",
	} {
		got, err := normalizeSerial(in)
		if want == "" && !errors.Is(err, certserial.ErrInvalid) || want != "" && (err != nil || got != want) {
			t.Errorf("normalizeSerial(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}
