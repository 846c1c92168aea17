package audit

import (
	"bytes"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"errors"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"

	"github.com/inkan-pki/inkan/certserial"
)

// person is identity-like input: what a derived certificate's issuance knows about
// the person, from the JPKI basic-4 information.
var person = map[string]string{
	"name":        "山田 太郎",
	"birth":       "1980-01-02",
	"address":     "東京都千代田区千代田1-1",
	"jpki-serial": "1234567890ABCDEF",
}

func personCert(t *testing.T, serial *big.Int) []byte {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:   serial,
		Subject:        pkix.Name{CommonName: person["name"], Locality: []string{person["address"]}},
		NotBefore:      testTime,
		NotAfter:       testTime.AddDate(1, 0, 0),
		AuthorityKeyId: []byte{1, 2, 3, 4},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func TestNoPersonalDataInTheLog(t *testing.T) {
	secret := make([]byte, 32)
	rand.Read(secret)
	pk, err := newPersonalKey(secret)
	if err != nil {
		t.Fatal(err)
	}
	serial := big.NewInt(0x5eed)
	der := personCert(t, serial)
	m := Meta{RaftIndex: 3, Time: testTime, Actor: actorEnrollment}
	issued, err := newIssuedLeaf(m, pk, issuedCert{Cert: der, Profile: "derived-signing", Personal: person})
	if err != nil {
		t.Fatal(err)
	}
	enc, err := EncodeLeaf(issued)
	if err != nil {
		t.Fatal(err)
	}

	clear := [][]byte{der}
	for _, v := range person {
		clear = append(clear, []byte(v))
		// Also the parts a partial leak would show: family name, birth year and month.
		for _, part := range strings.FieldsFunc(v, func(r rune) bool { return r == ' ' || r == '-' }) {
			if len(part) >= 4 {
				clear = append(clear, []byte(part))
			}
		}
	}
	found := func(b []byte) []string {
		var f []string
		for _, c := range clear {
			if bytes.Contains(b, c) {
				f = append(f, string(c))
			}
		}
		return f
	}
	// The check can fail: a leaf made the wrong way shows the clear values.
	careless, _ := NewLeaf(m, "test.careless", nil, map[string]any{"cert": der, "who": person})
	if b, _ := EncodeLeaf(careless); len(found(b)) < len(clear) {
		t.Fatalf("the search misses clear values in a careless leaf: found only %q", found(b))
	}

	if f := found(enc); len(f) > 0 {
		t.Errorf("the issued leaf holds %q in clear", f)
	}
	// What is there instead: the certificate's hash and one keyed hash per attribute.
	var d issuedData
	if err := cbor.Unmarshal(issued.Data, &d); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(d.CertSHA256, certHash(der)) || len(d.Personal) != len(person) || !bytes.Equal(d.Personal["name"], pk.Hash("name", person["name"])) {
		t.Errorf("issued data: %+v", d)
	}
	if issued.Serial != "5eed" || !d.NotAfter.Equal(testTime.AddDate(1, 0, 0)) {
		t.Errorf("serial %q, not after %v", issued.Serial, d.NotAfter)
	}

	// Nor anywhere in an export: not in any file, not in any decoded leaf.
	key := newKey(t)
	l := newTestLog(t, key)
	revoked, _ := newRevokedLeaf(Meta{RaftIndex: 4, Time: testTime.Add(time.Hour), Actor: OperatorActor(&x509.Certificate{Raw: []byte("op")})}, revoked{Serial: serial, Reason: 4})
	if _, err := l.Append(issued, revoked); err != nil {
		t.Fatal(err)
	}
	if _, err := l.SignCheckpoint(key, testTime.Add(2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "export")
	if err := func() error { _, err := Export(t.Context(), dir, l.Source(), 0); return err }(); err != nil {
		t.Fatal(err)
	}
	err = fs.WalkDir(os.DirFS(dir), ".", func(p string, de fs.DirEntry, err error) error {
		if err != nil || de.IsDir() {
			return err
		}
		b, err := os.ReadFile(filepath.Join(dir, p))
		if err != nil {
			return err
		}
		if f := found(b); len(f) > 0 {
			t.Errorf("%s holds %q in clear", p, f)
		}
		for _, line := range strings.Split(string(b), "\n") {
			for _, field := range strings.Fields(line) {
				if dec, err := base64.StdEncoding.DecodeString(field); err == nil {
					if f := found(dec); len(f) > 0 {
						t.Errorf("%s holds %q in base64", p, f)
					}
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := newPersonalKey(secret[:16]); err == nil {
		t.Error("a 16-byte personal-data key was accepted")
	}
	if _, err := newIssuedLeaf(m, personalKey{}, issuedCert{Cert: der, Personal: person}); err == nil {
		t.Error("personal data hashed without a key")
	}
}

func TestProve(t *testing.T) {
	key := newKey(t)
	l := newTestLog(t, key)
	buildLog(t, l, key, 0, 100, 4, 16)
	// testLeaf issues serial 40 at leaf 40 and revokes it at leaf 41.
	serial := testSerial(40)
	spelled := strings.ToUpper(serial.Text(16))
	var colons []string
	for i := 0; i < len(spelled); i += 2 {
		colons = append(colons, spelled[i:i+2])
	}
	dir := exportLog(t, l, 0)
	for _, s := range []string{serial.Text(16), spelled, strings.Join(colons, ":"), "0x00" + serial.Text(16)} {
		found, err := Prove(os.DirFS(dir), nil, s)
		if err != nil || len(found) != 2 {
			t.Fatalf("prove %s: %v, %d leaves", s, err, len(found))
		}
		for i, in := range found {
			if in.Err != nil || in.Leaf.Index != uint64(40+i) || in.Checkpoint.Size != 100 || len(in.Proof) == 0 {
				t.Errorf("prove %s, leaf %d: %v %+v", s, in.Leaf.Index, in.Err, in.Leaf)
			}
		}
		if found[0].Leaf.Type != typeIssued || found[1].Leaf.Type != typeRevoked {
			t.Errorf("types %s, %s", found[0].Leaf.Type, found[1].Leaf.Type)
		}
	}
	var out bytes.Buffer
	if err := ProveDir(&out, "", dir, serial.Text(16)); err != nil || !strings.Contains(out.String(), "leaf 41: cert.revoked serial "+serial.Text(16)) {
		t.Errorf("prove output: %v\n%s", err, &out)
	}
	if found, err := Prove(os.DirFS(dir), nil, "abcdef"); err != nil || len(found) != 0 {
		t.Errorf("an unknown serial: %v %v", found, err)
	}
	if err := ProveDir(&out, "", dir, "abcdef"); err == nil {
		t.Error("ProveDir of an unknown serial succeeded")
	}

	// A changed issuance leaf is found but not proven (nor is leaf 41, whose proof
	// holds leaf 40's hash).
	editLeaf(t, dir, 40, true, func(b []byte) []byte {
		return bytes.Replace(b, []byte("derived-signing"), []byte("derived-signinG"), 1)
	})
	found, err := Prove(os.DirFS(dir), nil, serial.Text(16))
	if err != nil || len(found) != 2 || found[0].Err == nil {
		t.Fatalf("prove after changing leaf 40: %v %+v", err, found)
	}
	// Partial exports prove from their start range.
	part := exportLog(t, l, 32)
	found, err = Prove(os.DirFS(part), nil, serial.Text(16))
	if err != nil || len(found) != 2 || found[0].Err != nil || found[1].Err != nil {
		t.Fatalf("prove in an export from 32: %v %+v", err, found)
	}
}

// TestProveDirPrintsTheOneSpelling: a serial whose top hex digit is 0 is kept in
// its leaf as the leaves always kept it (odd digits), and prove reads it in every
// form and prints it as every other command does (certserial.Format).
func TestProveDirPrintsTheOneSpelling(t *testing.T) {
	key := newKey(t)
	l := newTestLog(t, key)
	serial := new(big.Int).SetUint64(0x0d0a5908f15e1a77)
	leaf, err := newRevokedLeaf(Meta{RaftIndex: 1, Time: testTime, Actor: ActorSystem}, revoked{Serial: serial, Reason: 1})
	if err != nil {
		t.Fatal(err)
	}
	if leaf.Serial != "d0a5908f15e1a77" {
		t.Errorf("leaf serial %q: the leaves' encoding changed", leaf.Serial)
	}
	if _, err := l.Append(leaf); err != nil {
		t.Fatal(err)
	}
	if _, err := l.SignCheckpoint(key, testTime.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	dir := exportLog(t, l, 0)
	for _, in := range []string{"0d0a5908f15e1a77", "0D0A5908F15E1A77", "d0a5908f15e1a77", "0d:0a:59:08:f1:5e:1a:77"} {
		var out bytes.Buffer
		if err := ProveDir(&out, "", dir, in); err != nil {
			t.Fatalf("prove --serial %s: %v\n%s", in, err, &out)
		}
		if !strings.HasPrefix(out.String(), "leaf 0: cert.revoked serial 0d0a5908f15e1a77 at ") {
			t.Errorf("prove --serial %s printed:\n%s", in, &out)
		}
	}
	var out bytes.Buffer
	err = ProveDir(&out, "", dir, "0d0g")
	if !errors.Is(err, certserial.ErrInvalid) {
		t.Errorf("prove --serial 0d0g: %v, want certserial.ErrInvalid", err)
	}
}
