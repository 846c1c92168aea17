package ocsp

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"testing"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// referenceSign encodes a response with cryptobyte, the general-purpose way,
// field by field as RFC 6960 §4.2.1 lists them; the hand-written encoder in
// sign must produce the same bytes.
func referenceSign(t *testing.T, b *builder, st certStatus, hash crypto.Hash, producedAt, thisUpdate, nextUpdate time.Time) []byte {
	t.Helper()
	tbs := cryptobyte.NewBuilder(nil)
	tbs.AddASN1(cbasn1.SEQUENCE, func(rd *cryptobyte.Builder) { // ResponseData
		rd.AddBytes(b.responder)
		rd.AddASN1GeneralizedTime(producedAt.UTC())
		rd.AddASN1(cbasn1.SEQUENCE, func(list *cryptobyte.Builder) {
			list.AddASN1(cbasn1.SEQUENCE, func(sr *cryptobyte.Builder) { // SingleResponse
				sr.AddASN1(cbasn1.SEQUENCE, func(id *cryptobyte.Builder) {
					id.AddBytes(b.issuerIDs[hash])
					mag := trimSerial(st.Serial)
					id.AddASN1(cbasn1.INTEGER, func(i *cryptobyte.Builder) {
						if len(mag) == 0 || mag[0]&0x80 != 0 {
							i.AddUint8(0)
						}
						i.AddBytes(mag)
					})
				})
				switch st.Status {
				case statusGood:
					sr.AddASN1(cbasn1.Tag(0).ContextSpecific(), func(*cryptobyte.Builder) {})
				case statusRevoked:
					sr.AddASN1(cbasn1.Tag(1).Constructed().ContextSpecific(), func(ri *cryptobyte.Builder) {
						ri.AddASN1GeneralizedTime(st.RevokedAt.UTC())
						if st.Reason >= 0 {
							ri.AddASN1(cbasn1.Tag(0).Constructed().ContextSpecific(), func(r *cryptobyte.Builder) {
								r.AddASN1Enum(int64(st.Reason))
							})
						}
					})
				default:
					sr.AddASN1(cbasn1.Tag(2).ContextSpecific(), func(*cryptobyte.Builder) {})
				}
				sr.AddASN1GeneralizedTime(thisUpdate.UTC())
				sr.AddASN1(cbasn1.Tag(0).Constructed().ContextSpecific(), func(n *cryptobyte.Builder) {
					n.AddASN1GeneralizedTime(nextUpdate.UTC())
				})
				if b.archiveOld > 0 {
					sr.AddASN1(cbasn1.Tag(1).Constructed().ContextSpecific(), func(exts *cryptobyte.Builder) {
						exts.AddASN1(cbasn1.SEQUENCE, func(l *cryptobyte.Builder) {
							l.AddASN1(cbasn1.SEQUENCE, func(e *cryptobyte.Builder) {
								e.AddASN1ObjectIdentifier(oidArchiveCutoff)
								e.AddASN1(cbasn1.OCTET_STRING, func(v *cryptobyte.Builder) {
									v.AddASN1GeneralizedTime(producedAt.Add(-b.archiveOld).UTC())
								})
							})
						})
					})
				}
			})
		})
	})
	tbsDER := tbs.BytesOrPanic()
	h := b.digest.New()
	h.Write(tbsDER)
	sig, err := b.key.Sign(rand.Reader, h.Sum(nil), b.digest)
	if err != nil {
		t.Fatal(err)
	}
	out := cryptobyte.NewBuilder(nil)
	out.AddASN1(cbasn1.SEQUENCE, func(r *cryptobyte.Builder) { // OCSPResponse
		r.AddASN1Enum(0)
		r.AddASN1(cbasn1.Tag(0).Constructed().ContextSpecific(), func(rb *cryptobyte.Builder) {
			rb.AddASN1(cbasn1.SEQUENCE, func(rb *cryptobyte.Builder) {
				rb.AddASN1ObjectIdentifier(oidOCSPBasic)
				rb.AddASN1(cbasn1.OCTET_STRING, func(o *cryptobyte.Builder) {
					o.AddASN1(cbasn1.SEQUENCE, func(basic *cryptobyte.Builder) {
						basic.AddBytes(tbsDER)
						basic.AddBytes(b.sigAlg)
						basic.AddASN1BitString(sig)
						basic.AddBytes(b.certs)
					})
				})
			})
		})
	})
	return out.BytesOrPanic()
}

// TestSignMatchesReference signs with a deterministic key (RSA PKCS#1 v1.5), so
// the hand-written encoding and the reference must agree byte for byte: every
// status, reasons absent and present, serials short, long, zero, with a leading
// zero byte and with the high bit set, with and without an archive cutoff and a
// responder certificate, at the edges of the DER length forms. split must take
// every response apart so that wrap rebuilds it.
func TestSignMatchesReference(t *testing.T) {
	p := getPKI(t)
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 11, 25, 4, 5, 6, 0, time.UTC)
	serials := [][]byte{{}, {0}, {1}, {0x7f}, {0x80}, {0, 0, 0x81}, bytes.Repeat([]byte{0xff}, 20), bytes.Repeat([]byte{0x5a}, 127)}
	statuses := []certStatus{
		{Status: statusGood},
		{Status: statusRevoked, RevokedAt: now.Add(-36 * time.Hour), Reason: -1},
		{Status: statusRevoked, RevokedAt: now.Add(-time.Minute), Reason: 0},
		{Status: statusRevoked, RevokedAt: time.Date(1999, 12, 31, 23, 59, 59, 0, time.UTC), Reason: 10},
		{Status: unknown},
	}
	for _, delegated := range []bool{true, false} {
		for _, retention := range []time.Duration{0, 10 * 365 * 24 * time.Hour} {
			responder, signer := (*x509.Certificate)(nil), crypto.Signer(p.caKey)
			if delegated {
				responder, signer = p.delegatedResponder(t, key), key
			}
			b, err := newBuilder(p.ca, responder, signer, retention)
			if err != nil {
				t.Fatal(err)
			}
			for _, h := range certIDHashes {
				for _, serial := range serials {
					for _, st := range statuses {
						st.Serial = serial
						got, err := b.sign(st, h, now, now, now.Add(96*time.Hour))
						if err != nil {
							t.Fatal(err)
						}
						want := referenceSign(t, b, st, h, now, now, now.Add(96*time.Hour))
						body, certs, ok := split(got)
						if !ok || !bytes.Equal(certs, b.certs) || !bytes.Equal(wrap(body, certs), got) {
							t.Fatalf("%v serial %x %+v: split ok=%v, or wrap does not rebuild the response", h, serial, st, ok)
						}
						wantBody, _, _ := split(want)
						// The CA's key is ECDSA, whose signatures differ each time:
						// there the signed data must agree; with the RSA key, all.
						if !bytes.Equal(firstElement(body), firstElement(wantBody)) || (delegated && !bytes.Equal(got, want)) {
							t.Fatalf("delegated=%v %v serial %x %+v archive=%v:\n got %x\nwant %x", delegated, h, serial, st, retention > 0, got, want)
						}
					}
				}
			}
		}
	}
}

func firstElement(in []byte) []byte {
	s := cryptobyte.String(in)
	var e cryptobyte.String
	if !s.ReadAnyASN1Element(&e, nil) {
		return nil
	}
	return e
}

// FuzzSplit holds split and wrap to each other: whatever split accepts, wrap
// rebuilds byte for byte, and nothing makes either panic.
func FuzzSplit(f *testing.F) {
	p := getPKI(f)
	b, err := newBuilder(p.ca, nil, p.caKey, time.Hour)
	if err != nil {
		f.Fatal(err)
	}
	now := time.Now()
	der, err := b.sign(certStatus{Serial: []byte{1, 2}, Status: statusGood}, crypto.SHA1, now, now, now.Add(time.Hour))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(der)
	f.Add(wrap([]byte{0x30, 0}, []byte{0xa0, 0}))
	f.Add([]byte{0x30, 0x03, 0x0a, 0x01, 0x01})
	f.Fuzz(func(t *testing.T, in []byte) {
		body, certs, ok := split(in)
		if ok && !bytes.Equal(wrap(body, certs), in) {
			t.Fatalf("split(%x) = %x, %x; wrap rebuilds %x", in, body, certs, wrap(body, certs))
		}
	})
}
