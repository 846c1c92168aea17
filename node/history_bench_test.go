package node

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/inkan-pki/inkan/ca"
	"github.com/inkan-pki/inkan/certserial"
	"github.com/inkan-pki/inkan/crlreason"
	"github.com/inkan-pki/inkan/policies"
)

// BenchmarkEvidence: the latency of /status and /evidence on one node's OCSP
// listener, over HTTP, against the baseline of fetching the shard CRL current
// at T by number from the same listener (the bytes the bundle mostly is), in
// the same run. 64 certificates issued, 32 revoked, T between.
func BenchmarkEvidence(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cfg := historyNodeConfig(b)
	n, err := Start(ctx, cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer n.Stop(context.Background())
	for !n.ready(ctx).OK {
		time.Sleep(20 * time.Millisecond)
	}
	auth := n.app.authority()
	caInit, err := auth.Init(ctx, ca.InitOptions{Subject: pkix.Name{Country: []string{"JP"}, CommonName: "bench CA"}, SelfSign: true})
	if err != nil {
		b.Fatal(err)
	}
	var serials []string
	for i := range 64 {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		link, person := make([]byte, 32), make([]byte, 32)
		rand.Read(link)
		rand.Read(person)
		iss, err := auth.Issue(ctx, ca.Request{
			Decision: policies.Decision{Profile: "derived-signing", PolicyVersion: 1,
				Template: &x509.Certificate{Subject: pkix.Name{Country: []string{"JP"}, CommonName: fmt.Sprintf("%x", link[:8])},
					KeyUsage: x509.KeyUsageDigitalSignature},
				NotAfter: time.Now().Add(24 * time.Hour)},
			PublicKey: key.Public(), Link: link, Person: person})
		if err != nil {
			b.Fatal(err)
		}
		c, _ := x509.ParseCertificate(iss.DER)
		serials = append(serials, certserial.Format(c.SerialNumber))
		if i%2 == 1 {
			if err := auth.Revoke(ctx, c.SerialNumber, crlreason.KeyCompromise, ""); err != nil {
				b.Fatal(err)
			}
		}
	}
	time.Sleep(3 * time.Second)
	at := time.Now().UTC().Format(time.RFC3339)
	time.Sleep(3 * time.Second) // a CRL after T
	base := "http://" + n.Addrs().OCSP
	get := func(path string) []byte {
		resp, err := http.Get(base + path)
		if err != nil {
			b.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			b.Fatalf("%s: %d %s", path, resp.StatusCode, body)
		}
		return body
	}
	var st struct {
		Shard  int `json:"shard"`
		CRLAtT struct {
			Path string `json:"path"`
		} `json:"crl_at_t"`
	}
	if err := json.Unmarshal(get("/status/"+caInit.ID+"/"+serials[1]+"?at="+at), &st); err != nil || st.CRLAtT.Path == "" {
		b.Fatalf("no CRL at T: %v", err)
	}
	ms := map[string]float64{}
	for _, c := range []struct{ name, path string }{
		{"crl-by-number", st.CRLAtT.Path},
		{"status", "/status/" + caInit.ID + "/" + serials[1] + "?at=" + at},
		{"evidence", "/evidence/" + caInit.ID + "/" + serials[1] + "?at=" + at},
	} {
		b.Run(c.name, func(b *testing.B) {
			start := time.Now()
			for b.Loop() {
				get(c.path)
			}
			ms[c.name] = float64(time.Since(start).Microseconds()) / 1000 / float64(b.N)
			b.ReportMetric(ms[c.name], "ms/op")
			if c.name != "crl-by-number" && ms["crl-by-number"] > 0 {
				b.ReportMetric(ms[c.name]/ms["crl-by-number"], "x-crl")
			}
		})
	}
}
