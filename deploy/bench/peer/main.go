package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/inkan-pki/inkan/enrollapi"
	"github.com/inkan-pki/inkan/hsm"
	"github.com/inkan-pki/inkan/subscriber"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: peer stepca-init|stepca|inkan [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "stepca-init":
		err = stepcaInit(os.Args[2:])
	case "stepca":
		err = stepcaRun(os.Args[2:])
	case "inkan":
		err = inkanRun(os.Args[2:])
	case "ports":
		err = freePorts(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q: stepca-init, stepca or inkan", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "peer:", err)
		os.Exit(1)
	}
}

// freePorts prints K ports the kernel gave out for 127.0.0.1:0 (held together,
// so they differ), for the servers peer.sh starts.
func freePorts(args []string) error {
	k := 0
	if len(args) != 1 {
		return errors.New("ports: give K")
	}
	if _, err := fmt.Sscan(args[0], &k); err != nil || k < 1 || k > 64 {
		return fmt.Errorf("ports: K=%q: want 1..64", args[0])
	}
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range k {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		ls = append(ls, l)
		fmt.Println(l.Addr().(*net.TCPAddr).Port)
	}
	return nil
}

// httpClient keeps up to c connections alive to each server.
func httpClient(caFile string, c int) (*http.Client, error) {
	pemData, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemData) {
		return nil, fmt.Errorf("%s: no certificate", caFile)
	}
	tr := &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: pool},
		MaxIdleConns:        4 * c,
		MaxIdleConnsPerHost: c,
		IdleConnTimeout:     5 * time.Minute,
		ForceAttemptHTTP2:   false, // HTTP/1.1, one request per connection at a time, both sides
	}
	return &http.Client{Transport: tr, Timeout: 2 * time.Minute}, nil
}

// drive runs n jobs on c clients, client w taking jobs w, w+c, …; it returns the
// elapsed time and each job's latency. The first error stops nothing but is
// returned.
func drive(n, c int, job func(w, i int) error) (time.Duration, []time.Duration, error) {
	lat := make([]time.Duration, n)
	var first atomic.Value
	var wg sync.WaitGroup
	start := time.Now()
	for w := range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += c {
				t0 := time.Now()
				if err := job(w, i); err != nil {
					first.CompareAndSwap(nil, err)
					return
				}
				lat[i] = time.Since(t0)
			}
		}()
	}
	wg.Wait()
	el := time.Since(start)
	if err, _ := first.Load().(error); err != nil {
		return el, nil, err
	}
	return el, lat, nil
}

func report(what string, el time.Duration, lat []time.Duration, cpu cpuUse) {
	s := slices.Clone(lat)
	slices.Sort(s)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	per := func(d time.Duration) float64 { return ms(d) / float64(len(s)) }
	fmt.Printf("what=%s n=%d secs=%.2f rate=%.1f/s p50=%.1fms p99=%.1fms server-cpu=%.2fms/req client-cpu=%.2fms/req\n",
		what, len(s), el.Seconds(), float64(len(s))/el.Seconds(), ms(s[len(s)/2]), ms(s[len(s)*99/100]),
		per(cpu.server), per(cpu.client))
}

// cpuUse is the CPU (user and system) the servers and this process spent during
// the timed part of a run.
type cpuUse struct{ server, client time.Duration }

// cpuMeter reads the CPU time of the server processes (from /proc) and of this
// process (getrusage) at start and at stop.
type cpuMeter struct {
	pids           []int
	server, client time.Duration
}

// newCPUMeter parses pids ("1,2,3"; empty: no server is measured).
func newCPUMeter(pids string) (*cpuMeter, error) {
	m := &cpuMeter{}
	for _, f := range strings.Split(pids, ",") {
		if f == "" {
			continue
		}
		pid, err := strconv.Atoi(f)
		if err != nil || pid <= 0 {
			return nil, fmt.Errorf("-pids: %q is not a process ID", f)
		}
		m.pids = append(m.pids, pid)
	}
	return m, nil
}

// clockTick is the unit of /proc/PID/stat's times (USER_HZ, 100 on Linux).
const clockTick = 10 * time.Millisecond

func (m *cpuMeter) read() (server, client time.Duration, err error) {
	for _, pid := range m.pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return 0, 0, err
		}
		// Fields after the command's closing parenthesis: state is field 3, utime 14, stime 15.
		i := bytes.LastIndexByte(b, ')')
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 13 {
			return 0, 0, fmt.Errorf("/proc/%d/stat: too short", pid)
		}
		for _, s := range f[11:13] {
			t, err := strconv.ParseInt(s, 10, 64)
			if err != nil {
				return 0, 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
			}
			server += time.Duration(t) * clockTick
		}
	}
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, 0, err
	}
	client = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	return server, client, nil
}

func (m *cpuMeter) start() error {
	var err error
	m.server, m.client, err = m.read()
	return err
}

func (m *cpuMeter) stop() (cpuUse, error) {
	s, c, err := m.read()
	return cpuUse{server: s - m.server, client: c - m.client}, err
}

// ---- step-ca ----

// stepcaInit writes a root and an intermediate CA (ECDSA P-256, as `step ca
// init` makes them), a JWK provisioner's key, and ca.json with a bbolt
// database, into dir.
func stepcaInit(args []string) error {
	fs := flag.NewFlagSet("stepca-init", flag.ExitOnError)
	dir := fs.String("dir", "", "directory to write")
	addr := fs.String("addr", "", "listen address host:port")
	_ = fs.Parse(args)
	if *dir == "" || *addr == "" {
		return errors.New("stepca-init: give -dir and -addr")
	}
	if err := os.MkdirAll(filepath.Join(*dir, "db"), 0o700); err != nil {
		return err
	}
	now := time.Now()
	rootKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rootTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "bench step-ca Root CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.AddDate(10, 0, 0),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, BasicConstraintsValid: true, IsCA: true, MaxPathLen: 1,
	}
	rootDER, err := x509.CreateCertificate(rand.Reader, rootTmpl, rootTmpl, rootKey.Public(), rootKey)
	if err != nil {
		return err
	}
	root, _ := x509.ParseCertificate(rootDER)
	intKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	intTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "bench step-ca Intermediate CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.AddDate(10, 0, 0),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, BasicConstraintsValid: true, IsCA: true, MaxPathLenZero: true,
	}
	intDER, err := x509.CreateCertificate(rand.Reader, intTmpl, root, intKey.Public(), rootKey)
	if err != nil {
		return err
	}
	intKeyDER, _ := x509.MarshalECPrivateKey(intKey)
	provKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	provDER, _ := x509.MarshalECPrivateKey(provKey)
	pub := jwkOf(&provKey.PublicKey)
	write := func(name string, typ string, der []byte) error {
		return os.WriteFile(filepath.Join(*dir, name), pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600)
	}
	for _, f := range []struct {
		name, typ string
		der       []byte
	}{
		{"root_ca.crt", "CERTIFICATE", rootDER},
		{"intermediate_ca.crt", "CERTIFICATE", intDER},
		{"intermediate_ca_key", "EC PRIVATE KEY", intKeyDER},
		{"provisioner.key", "EC PRIVATE KEY", provDER},
	} {
		if err := write(f.name, f.typ, f.der); err != nil {
			return err
		}
	}
	abs, err := filepath.Abs(*dir)
	if err != nil {
		return err
	}
	cfg := map[string]any{
		"root":     filepath.Join(abs, "root_ca.crt"),
		"crt":      filepath.Join(abs, "intermediate_ca.crt"),
		"key":      filepath.Join(abs, "intermediate_ca_key"),
		"address":  *addr,
		"dnsNames": []string{"127.0.0.1", "localhost"},
		"logger":   map[string]any{"format": "text"},
		"db":       map[string]any{"type": "bbolt", "dataSource": filepath.Join(abs, "db", "bbolt.db")},
		"authority": map[string]any{
			"provisioners": []any{map[string]any{"type": "JWK", "name": "bench", "key": pub}},
		},
		"tls": map[string]any{
			"cipherSuites":  []string{"TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256", "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"},
			"minVersion":    1.2,
			"maxVersion":    1.3,
			"renegotiation": false,
		},
	}
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(*dir, "ca.json"), b, 0o600)
}

// jwkOf is the public JWK of k with its RFC 7638 thumbprint as kid, as step-ca's
// ca.json holds a JWK provisioner's key.
func jwkOf(k *ecdsa.PublicKey) map[string]string {
	b, _ := k.Bytes() // 0x04 || X || Y
	x := base64.RawURLEncoding.EncodeToString(b[1:33])
	y := base64.RawURLEncoding.EncodeToString(b[33:])
	sum := sha256.Sum256([]byte(`{"crv":"P-256","kty":"EC","x":"` + x + `","y":"` + y + `"}`))
	return map[string]string{"use": "sig", "kty": "EC", "kid": base64.RawURLEncoding.EncodeToString(sum[:]),
		"crv": "P-256", "alg": "ES256", "x": x, "y": y}
}

// ott is a step-ca one-time token for sub: an ES256 JWT by the provisioner's key,
// as `step ca token` makes it.
func ott(key *ecdsa.PrivateKey, kid, aud, sub string) (string, error) {
	now := time.Now()
	jti := make([]byte, 32)
	_, _ = rand.Read(jti)
	h, _ := json.Marshal(map[string]string{"alg": "ES256", "kid": kid, "typ": "JWT"})
	p, _ := json.Marshal(map[string]any{"iss": "bench", "aud": aud, "sub": sub, "sans": []string{sub},
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(5 * time.Minute).Unix(), "jti": hex.EncodeToString(jti)})
	in := base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString(p)
	d := sha256.Sum256([]byte(in))
	r, s, err := ecdsa.Sign(rand.Reader, key, d[:])
	if err != nil {
		return "", err
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return in + "." + base64.RawURLEncoding.EncodeToString(sig), nil
}

type stepReq struct {
	body []byte
	key  *ecdsa.PrivateKey
}

func stepcaRun(args []string) error {
	fs := flag.NewFlagSet("stepca", flag.ExitOnError)
	dir := fs.String("dir", "", "the directory stepca-init wrote")
	url := fs.String("url", "", "https://host:port")
	n := fs.Int("n", 2000, "timed requests")
	c := fs.Int("c", 64, "clients")
	pids := fs.String("pids", "", "the server's process IDs, comma-separated, for its CPU per request")
	_ = fs.Parse(args)
	if *dir == "" || *url == "" {
		return errors.New("stepca: give -dir and -url")
	}
	meter, err := newCPUMeter(*pids)
	if err != nil {
		return err
	}
	kb, err := os.ReadFile(filepath.Join(*dir, "provisioner.key"))
	if err != nil {
		return err
	}
	blk, _ := pem.Decode(kb)
	if blk == nil {
		return errors.New("provisioner.key: not PEM")
	}
	pk, err := x509.ParseECPrivateKey(blk.Bytes)
	if err != nil {
		return err
	}
	kid := jwkOf(&pk.PublicKey)["kid"]
	hc, err := httpClient(filepath.Join(*dir, "root_ca.crt"), *c)
	if err != nil {
		return err
	}
	aud := strings.TrimSuffix(*url, "/") + "/1.0/sign"
	tag := hex.EncodeToString(randBytes(4))
	make1 := func(i int) (stepReq, error) {
		sub := fmt.Sprintf("b%s-%d.bench.test", tag, i)
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
			Subject: pkix.Name{CommonName: sub}, DNSNames: []string{sub}}, key)
		if err != nil {
			return stepReq{}, err
		}
		tok, err := ott(pk, kid, aud, sub)
		if err != nil {
			return stepReq{}, err
		}
		body, _ := json.Marshal(map[string]string{"csr": string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr})), "ott": tok})
		return stepReq{body, key}, nil
	}
	reqs := make([]stepReq, *c+*n)
	for i := range reqs {
		if reqs[i], err = make1(i); err != nil {
			return err
		}
	}
	send := func(r stepReq) error {
		resp, err := hc.Post(aud, "application/json", bytes.NewReader(r.body))
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		data, err := io.ReadAll(resp.Body)
		if err != nil {
			return err
		}
		if resp.StatusCode != http.StatusCreated {
			return fmt.Errorf("step-ca: HTTP %s: %.200s", resp.Status, data)
		}
		var out struct {
			Crt string `json:"crt"`
		}
		if err := json.Unmarshal(data, &out); err != nil {
			return err
		}
		blk, _ := pem.Decode([]byte(out.Crt))
		if blk == nil {
			return errors.New("step-ca: no certificate in the answer")
		}
		cert, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return err
		}
		if !r.key.PublicKey.Equal(cert.PublicKey) {
			return errors.New("step-ca: the certificate is not for the key")
		}
		return nil
	}
	if _, _, err := drive(*c, *c, func(_, i int) error { return send(reqs[i]) }); err != nil {
		return fmt.Errorf("warm-up: %w", err)
	}
	if err := meter.start(); err != nil {
		return err
	}
	el, lat, err := drive(*n, *c, func(_, i int) error { return send(reqs[*c+i]) })
	if err != nil {
		return err
	}
	cpu, err := meter.stop()
	if err != nil {
		return err
	}
	report("stepca-sign", el, lat, cpu)
	return nil
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

// ---- inkan ----

type inkanReq struct {
	req  enrollapi.Request
	csr  []byte
	key  *ecdsa.PrivateKey
	node int
}

func inkanRun(args []string) error {
	fs := flag.NewFlagSet("inkan", flag.ExitOnError)
	urls := fs.String("url", "", "API roots, comma-separated (client w uses the (w mod k)-th)")
	caFile := fs.String("ca", "", "the cluster CA (data/cluster-ca.pem)")
	cards := fs.String("cards", "", "card token labels, comma-separated")
	module := fs.String("module", "/usr/lib/softhsm/libsofthsm2.so", "the cards' PKCS#11 module")
	pinFile := fs.String("pin-file", "", "the cards' PIN file")
	n := fs.Int("n", 2000, "timed requests")
	c := fs.Int("c", 64, "clients")
	full := fs.Bool("full", false, "the whole flow in the timing: challenge, the card's proof, the enrollment")
	pids := fs.String("pids", "", "the servers' process IDs, comma-separated, for their CPU per request")
	_ = fs.Parse(args)
	if *urls == "" || *caFile == "" || *cards == "" || *pinFile == "" {
		return errors.New("inkan: give -url, -ca, -cards and -pin-file")
	}
	meter, err := newCPUMeter(*pids)
	if err != nil {
		return err
	}
	ctx := context.Background()
	hc, err := httpClient(*caFile, *c)
	if err != nil {
		return err
	}
	var clients []*subscriber.Client
	for _, u := range strings.Split(*urls, ",") {
		clients = append(clients, &subscriber.Client{BaseURL: u, HTTP: hc})
	}
	var cs []*subscriber.PKCS11Card
	for _, t := range strings.Split(*cards, ",") {
		card, err := subscriber.OpenCard(ctx, subscriber.CardConfig{Module: *module, Key: hsm.URI{Token: t}, PIN: hsm.PINFile(*pinFile)})
		if err != nil {
			return fmt.Errorf("card %s: %w", t, err)
		}
		defer card.Close()
		cs = append(cs, card)
	}
	// proof: the card's JWS over a fresh challenge of r's node, binding r's CSR.
	proof := func(r *inkanReq, card subscriber.Card) error {
		cl := clients[r.node]
		nonce, _, err := cl.Challenge(ctx)
		if err != nil {
			return err
		}
		now := time.Now()
		p, err := subscriber.NewProof(card, card.Chain(), subscriber.ProofClaims{
			Nonce: nonce, Audience: strings.TrimSuffix(cl.BaseURL, "/") + enrollapi.PathEnroll,
			IssuedAt: now, Expires: now.Add(enrollapi.MaxProofLifetime - time.Minute), CSR: r.csr,
		})
		if err != nil {
			return err
		}
		r.req = enrollapi.Request{Proof: p, CSR: base64.RawURLEncoding.EncodeToString(r.csr)}
		return nil
	}
	total := *c + *n
	reqs := make([]inkanReq, total)
	for i := range reqs {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		csr, err := subscriber.NewCSR(key)
		if err != nil {
			return err
		}
		reqs[i] = inkanReq{csr: csr, key: key, node: (i % *c) % len(clients)}
	}
	// Client w always uses card w mod len(cs): the CA refuses one of two
	// enrolments of a person at once (person-changed), so clients do not share a
	// card when there are as many cards as clients.
	cardOf := func(i int) subscriber.Card { return cs[(i%*c)%len(cs)] }
	// Made before timing: every request's challenge and proof (the warm-up's too),
	// or, for -full, only the warm-up's.
	pre := total
	if *full {
		pre = *c
	}
	if _, _, err := drive(pre, *c, func(_, i int) error { return proof(&reqs[i], cardOf(i)) }); err != nil {
		return fmt.Errorf("making the requests: %w", err)
	}
	// submit enrolls r. Unavailable (an intent abandoned by a leader change,
	// which a loaded machine can provoke) is retried as a client does, with a
	// new challenge and proof, and counted.
	var retries atomic.Int64
	submit := func(r *inkanReq, i int) error {
		_, err := clients[r.node].Submit(ctx, r.req, r.key)
		var p *enrollapi.Problem
		for try := 0; try < 5 && errors.As(err, &p) && p.Name() == "unavailable"; try++ {
			retries.Add(1)
			if err = proof(r, cardOf(i)); err == nil {
				_, err = clients[r.node].Submit(ctx, r.req, r.key)
			}
		}
		return err
	}
	if _, _, err := drive(*c, *c, func(_, i int) error { return submit(&reqs[i], i) }); err != nil {
		return fmt.Errorf("warm-up: %w", err)
	}
	what := "inkan-enroll-premade"
	job := func(_, i int) error { return submit(&reqs[*c+i], *c+i) }
	if *full {
		what = "inkan-enroll-full"
		job = func(_, i int) error {
			r := &reqs[*c+i]
			if err := proof(r, cardOf(*c+i)); err != nil {
				return err
			}
			return submit(r, *c+i)
		}
	}
	if len(clients) > 1 {
		what += fmt.Sprintf("-%dnodes", len(clients))
	}
	retries.Store(0)
	if err := meter.start(); err != nil {
		return err
	}
	el, lat, err := drive(*n, *c, job)
	if err != nil {
		return err
	}
	cpu, err := meter.stop()
	if err != nil {
		return err
	}
	report(what, el, lat, cpu)
	if k := retries.Load(); k > 0 {
		fmt.Fprintf(os.Stderr, "peer: %s: %d enrolments answered unavailable and were retried\n", what, k)
	}
	return nil
}
