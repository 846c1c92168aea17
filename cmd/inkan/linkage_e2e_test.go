package main

import (
	"bufio"
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/inkan-pki/inkan/audit"
)

// The linkage tests: issue 9's acceptance at the appliance level. A one-node
// cluster (`inkan server` on SoftHSM) trusts the stand-in J-LIS (`inkan jpki-sim`)
// and reads the CRL file it writes; the linkage job runs every second. Cards are
// SoftHSM tokens; subscribers use `inkan enroll`; relying parties are openssl
// (ocsp, crl); the auditor uses `inkan audit export/verify/prove`.

// linkageInterval is the node's enroll.linkage_interval: the job's pass period.
const linkageInterval = time.Second

// startLinkageNode starts a one-node cluster whose enrollment trusts lab's J-LIS
// and whose linkage job follows lab's CRL file every second, and makes its CA.
// The profiles are the shipped ones until the test applies its own.
func startLinkageNode(t *testing.T, lab *cardLab) *proc {
	t.Helper()
	p := newProc(t, "node1", "  bootstrap: true")
	p.addConfig(t, lab.jpkiSection()+fmt.Sprintf("enroll: {linkage_interval: %s}\n", linkageInterval), "http://"+p.ocspAddr+"/")
	p.start()
	p.waitReady()
	p.admin(t, "ca", "init", "--cn", "inkan linkage CA", "--country", "JP", "--self-sign")
	return p
}

// addCard makes one more card: a token of the lab's SoftHSM, and a JPKI
// signature certificate for h issued into it by the stand-in J-LIS. It returns
// the card's index for enroll and the certificate's serial (hex).
func (l *cardLab) addCard(label string, h person) (int, string) {
	l.t.Helper()
	l.run("hsm", "init-token", "--module", l.module, "--label", label, "--so-pin-file", filepath.Join(l.dir, "so.pin"), "--pin-file", l.pin)
	out := l.run("jpki-sim", "--dir", l.jlis, "issue-card", "--module", l.module, "--token", label, "--pin-file", l.pin,
		"--name", h.name, "--birth", h.birth, "--address", h.address)
	l.labels = append(l.labels, label)
	return len(l.labels) - 1, issuedSerial(l.t, out)
}

var cardSerialLine = regexp.MustCompile(`(?m)^card issued: serial ([0-9a-f]+)$`)

func issuedSerial(t *testing.T, out string) string {
	t.Helper()
	m := cardSerialLine.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("jpki-sim issue-card said no serial:\n%s", out)
	}
	return m[1]
}

// cardSerial is the serial of the good JPKI certificate on the token label, as
// `jpki-sim list` shows it.
func (l *cardLab) cardSerial(label string) string {
	l.t.Helper()
	out := l.run("jpki-sim", "--dir", l.jlis, "list")
	var found string
	for _, line := range strings.Split(out, "\n")[1:] {
		f := strings.Fields(line)
		if len(f) >= 4 && f[1] == label && f[3] == "good" {
			if found != "" {
				l.t.Fatalf("token %s holds two good certificates:\n%s", label, out)
			}
			found = f[0]
		}
	}
	if found == "" {
		l.t.Fatalf("no good certificate on token %s:\n%s", label, out)
	}
	return found
}

// jlisRevoke revokes a card's JPKI certificate as J-LIS does: `jpki-sim revoke`,
// which publishes a new CRL file.
func (l *cardLab) jlisRevoke(serial, reason string) {
	l.t.Helper()
	out := l.run("jpki-sim", "--dir", l.jlis, "revoke", "--serial", serial, "--reason", reason)
	if !strings.Contains(out, "CRL published") {
		l.t.Fatalf("jpki-sim revoke: %s", out)
	}
}

// enrollRebind runs `inkan enroll --rebind serial --key key` with card i, the
// holder's new card, and key, the derived certificate's own key, and returns what
// it printed.
func (l *cardLab) enrollRebind(p *proc, i int, serial, key, out string) (string, error) {
	return l.runErr("enroll", "--url", "https://"+p.apiAddr, "--ca-file", filepath.Join(p.dataDir, "cluster-ca.pem"),
		"--card", "pkcs11:token="+l.labels[i], "--card-module", l.module, "--card-pin-file", l.pin,
		"--rebind", serial, "--key", key, "--out", filepath.Join(l.dir, out), "--timeout", "30s")
}

var problemURN = regexp.MustCompile(`urn:inkan:problem:([a-z0-9-]+)`)

// problemName is the problem type a refused `inkan enroll` printed, or "".
func problemName(err error) string {
	if err == nil {
		return ""
	}
	m := problemURN.FindStringSubmatch(err.Error())
	if m == nil {
		return ""
	}
	return m[1]
}

// ocspAnswer is what `openssl ocsp` says of a certificate, its response verified
// against the CA.
type ocspAnswer struct{ status, reason string }

var ocspReasonLine = regexp.MustCompile(`Reason: (\w+)`)

func ocspQuery(p *proc, e *enrolled) (ocspAnswer, error) {
	out, err := exec.Command("openssl", "ocsp", "-issuer", e.ca, "-cert", e.leaf, "-CAfile", e.ca, "-no_nonce",
		"-url", "http://"+p.ocspAddr+"/").CombinedOutput()
	if err != nil {
		return ocspAnswer{}, fmt.Errorf("openssl ocsp: %v: %s", err, out)
	}
	if !bytes.Contains(out, []byte("Response verify OK")) {
		return ocspAnswer{}, fmt.Errorf("openssl did not verify the response: %s", out)
	}
	m := ocspStatusLine.FindSubmatch(out)
	if m == nil {
		return ocspAnswer{}, fmt.Errorf("no status in: %s", out)
	}
	a := ocspAnswer{status: string(m[1])}
	if r := ocspReasonLine.FindSubmatch(out); r != nil {
		a.reason = string(r[1])
	}
	return a, nil
}

// waitOCSPAnswer polls p's OCSP with openssl until it says want of e, and
// returns how long that took.
func waitOCSPAnswer(t *testing.T, p *proc, e *enrolled, want ocspAnswer, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		got, err := ocspQuery(p, e)
		if err == nil && got == want {
			return time.Since(start)
		}
		if time.Since(start) > limit {
			t.Fatalf("OCSP for %s: %+v, %v; want %+v within %s", e.serial, got, err, want, limit)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// crlView is e's CRL shard as a relying party reads it: fetched from the
// certificate's distribution point, its signature checked by openssl against the
// CA, and its entries as `openssl crl -text` prints them.
type crlView struct {
	number  string
	entries map[string]string // serial (lower-case hex, no leading zeros) → reason ("" when none)
}

// lists reports whether the CRL has an entry for serial.
func (v crlView) lists(serial string) bool {
	_, ok := v.entries[serial]
	return ok
}

func crlNumber(t *testing.T, v crlView) int {
	t.Helper()
	n, err := strconv.Atoi(v.number)
	if err != nil {
		t.Fatalf("CRL number %q: %v", v.number, err)
	}
	return n
}

// shardCRL fetches from p the CRL at the distribution point e's certificate
// names (its shard), as DER.
func shardCRL(t *testing.T, p *proc, e *enrolled) []byte {
	t.Helper()
	if len(e.cert.CRLDistributionPoints) != 1 {
		t.Fatalf("certificate has CRL distribution points %v", e.cert.CRLDistributionPoints)
	}
	dp, err := url.Parse(e.cert.CRLDistributionPoints[0])
	if err != nil {
		t.Fatal(err)
	}
	r, err := http.Get("http://" + p.ocspAddr + dp.Path)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := io.ReadAll(r.Body)
	r.Body.Close()
	if r.StatusCode != 200 {
		t.Fatalf("%s: GET %s: %s", p.name, dp.Path, r.Status)
	}
	return der
}

func fetchShardCRL(t *testing.T, p *proc, e *enrolled) crlView {
	t.Helper()
	der := shardCRL(t, p, e)
	f := filepath.Join(t.TempDir(), "shard.crl")
	if err := os.WriteFile(f, der, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("openssl", "crl", "-inform", "DER", "-in", f, "-CAfile", e.ca, "-noout", "-text").CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte("verify OK")) {
		t.Fatalf("openssl crl -verify: %v: %s", err, out)
	}
	return parseCRLText(t, string(out))
}

// parseCRLText reads the CRL number and the entries of `openssl crl -text`.
func parseCRLText(t *testing.T, text string) crlView {
	t.Helper()
	v := crlView{entries: map[string]string{}}
	sc := bufio.NewScanner(strings.NewReader(text))
	var serial string
	inNumber, inReason := false, false
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case strings.HasPrefix(line, "X509v3 CRL Number:"):
			inNumber = true
		case inNumber:
			v.number, inNumber = line, false
		case strings.HasPrefix(line, "Serial Number:"):
			s := strings.ToLower(strings.TrimSpace(strings.TrimPrefix(line, "Serial Number:")))
			n, ok := new(big.Int).SetString(s, 16)
			if !ok {
				t.Fatalf("openssl crl: serial %q", s)
			}
			serial = hex.EncodeToString(n.Bytes())
			v.entries[serial] = ""
		case strings.HasPrefix(line, "X509v3 CRL Reason Code:"):
			inReason = true
		case inReason:
			v.entries[serial], inReason = line, false
		}
	}
	return v
}

// waitCRLEntry polls e's shard until it lists e with reason (listed) or no
// longer lists it (!listed), and returns the shard as seen then.
func waitCRLEntry(t *testing.T, p *proc, e *enrolled, listed bool, reason string, limit time.Duration) crlView {
	t.Helper()
	start := time.Now()
	for {
		v := fetchShardCRL(t, p, e)
		got, ok := v.entries[e.serial]
		if ok == listed && (!listed || got == reason) {
			return v
		}
		if time.Since(start) > limit {
			t.Fatalf("CRL number %s: entry for %s is (%q, listed %v); want listed %v with reason %q within %s", v.number, e.serial, got, ok, listed, reason, limit)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// provedLeaf is one line of `inkan audit prove`: a leaf about the certificate,
// proven under the export's newest checkpoint.
type provedLeaf struct{ typ, actor, data string }

var proveLine = regexp.MustCompile(`^leaf \d+: (\S+) serial ([0-9a-f]+) at \S+ by (\S+) \(raft \d+\)$`)

// auditProve exports the audit log through p's API, verifies the export with
// `inkan audit verify`, and proves serial's leaves with `inkan audit prove`,
// again (an export a second later) until every leaf is under a checkpoint
// (prove exits non-zero while one is not) and check accepts them.
func auditProve(t *testing.T, p *proc, serial string, check func([]provedLeaf) error) []provedLeaf {
	t.Helper()
	var last error
	for attempt := 1; attempt <= 15; attempt++ {
		exp := exportVerifiedAudit(t, p)
		out, err := p.runErr("audit", "prove", "--serial", serial, exp)
		if err == nil {
			var leaves []provedLeaf
			lines := strings.Split(strings.TrimSpace(out), "\n")
			for i, line := range lines {
				m := proveLine.FindStringSubmatch(line)
				if m == nil {
					continue
				}
				if !sameHexSerial(m[2], serial) {
					t.Fatalf("audit prove --serial %s shows a leaf of %s:\n%s", serial, m[2], out)
				}
				l := provedLeaf{typ: m[1], actor: m[3]}
				for _, next := range lines[i+1:] {
					if strings.HasPrefix(next, "leaf ") {
						break
					}
					if d, ok := strings.CutPrefix(strings.TrimSpace(next), "data: "); ok {
						l.data = d
					}
				}
				leaves = append(leaves, l)
			}
			if last = check(leaves); last == nil {
				return leaves
			}
			last = fmt.Errorf("%w\n%s", last, out)
		} else {
			last = err
		}
		time.Sleep(time.Second)
	}
	t.Fatalf("audit prove --serial %s: %v", serial, last)
	return nil
}

func sameHexSerial(a, b string) bool {
	x, okx := new(big.Int).SetString(a, 16)
	y, oky := new(big.Int).SetString(b, 16)
	return okx && oky && x.Cmp(y) == 0
}

// exportVerifiedAudit exports the log through p's HTTPS API and verifies it.
func exportVerifiedAudit(t *testing.T, p *proc) string {
	t.Helper()
	exp := filepath.Join(t.TempDir(), "audit")
	p.run(t, "audit", "export", "--url", "https://"+p.apiAddr, "--cacert", filepath.Join(p.dataDir, "cluster-ca.pem"), "--out", exp)
	if out := p.run(t, "audit", "verify", exp); !strings.HasPrefix(out, "ok:") {
		t.Fatalf("audit verify: %s", out)
	}
	return exp
}

// hasProvedLeaf reports whether leaves hold one of type typ by actor whose data
// contains every one of data.
func hasProvedLeaf(leaves []provedLeaf, typ, actor string, data ...string) bool {
	for _, l := range leaves {
		if l.typ != typ || l.actor != actor {
			continue
		}
		ok := true
		for _, d := range data {
			ok = ok && strings.Contains(l.data, d)
		}
		if ok {
			return true
		}
	}
	return false
}

// scrapeMetric reads one sample of p's /metrics, or -1 if it is not there.
func scrapeMetric(t *testing.T, p *proc, name string) float64 {
	t.Helper()
	r, err := http.Get("http://" + p.metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	sc := bufio.NewScanner(r.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %v", sc.Text(), err)
			}
			return f
		}
	}
	return -1
}

// TestLinkageEndToEnd: five people enrol, one derived certificate each; J-LIS
// revokes each card's certificate with another reason (`jpki-sim revoke`, which
// rewrites the CRL file the node reads); the linkage job acts as the shipped
// profile's rules say, and a relying party sees it through `openssl ocsp` and
// the CRL shard: keyCompromise → revoked keyCompromise; affiliationChanged → on
// hold (certificateHold); superseded → still good; cessationOfOperation and a
// J-LIS certificateHold (others) → revoked cessationOfOperation. The job's
// metrics count the acts and the two certificates waiting (held, kept). The
// kept certificate's holder then re-binds it to the renewed card: relinked,
// still good, no longer waiting. The audit log records every act of the job
// with actor system, and none for the certificate kept.
func TestLinkageEndToEnd(t *testing.T) {
	begin := time.Now()
	lab := newCardLab(t)
	p := startLinkageNode(t, lab)
	useTestCards(t, p)
	t.Logf("node ready after %s", time.Since(begin).Round(time.Millisecond))

	cases := []struct {
		jlisReason string
		want       ocspAnswer
		crlReason  string // "" when the CRL must not list it
		act        string // the audit leaf the job writes, "" for none
		actReason  string // the reason in that leaf's data (CBOR diagnostic)
	}{
		{"superseded", ocspAnswer{"good", ""}, "", "", ""},
		{"keyCompromise", ocspAnswer{"revoked", "keyCompromise"}, "Key Compromise", "cert.revoked", `"reason": 1`},
		{"affiliationChanged", ocspAnswer{"revoked", "certificateHold"}, "Certificate Hold", "cert.held", `"reason": 6`},
		{"cessationOfOperation", ocspAnswer{"revoked", "cessationOfOperation"}, "Cessation Of Operation", "cert.revoked", `"reason": 5`},
		{"certificateHold", ocspAnswer{"revoked", "cessationOfOperation"}, "Cessation Of Operation", "cert.revoked", `"reason": 5`},
	}
	people := append(append([]person{}, holders...),
		person{"例示\u3000三郎", "1969-03-03", "福岡県福岡市中央区天神一丁目"},
		person{"仮名\u3000四季", "1992-11-30", "宮城県仙台市青葉区本町三丁目"})
	var certs []*enrolled
	var jpkiSerials []string
	for i, c := range cases {
		idx := i
		var serial string
		if i < len(lab.labels) {
			serial = lab.cardSerial(lab.labels[i])
		} else {
			idx, serial = lab.addCard(fmt.Sprintf("card%d", i+1), people[i])
		}
		e, err := lab.enroll(p, idx, fmt.Sprintf("link-%s", c.jlisReason))
		if err != nil {
			t.Fatalf("enroll card %d: %v", idx+1, err)
		}
		certs, jpkiSerials = append(certs, e), append(jpkiSerials, serial)
	}
	for _, e := range certs {
		waitOCSPAnswer(t, p, e, ocspAnswer{"good", ""}, 10*time.Second)
	}
	t.Logf("%d certificates enrolled and good after %s", len(certs), time.Since(begin).Round(time.Millisecond))

	// J-LIS revokes: superseded first, so that every pass that acts on the others
	// has read the superseded entry too.
	revoked := map[int]time.Time{}
	for i, c := range cases {
		lab.jlisRevoke(jpkiSerials[i], c.jlisReason)
		revoked[i] = time.Now()
	}
	for i, c := range cases[1:] {
		i++
		waitOCSPAnswer(t, p, certs[i], c.want, 15*time.Second)
		t.Logf("J-LIS %s: OCSP %s %s %s after the revocation was published", c.jlisReason, c.want.status, c.want.reason,
			time.Since(revoked[i]).Round(time.Millisecond))
	}
	for i, c := range cases[1:] {
		v := waitCRLEntry(t, p, certs[i+1], true, c.crlReason, 15*time.Second)
		t.Logf("J-LIS %s: CRL number %s lists %s as %q", c.jlisReason, v.number, certs[i+1].serial, c.crlReason)
	}

	// Superseded: kept until re-bound (or the grace ends). Passes have run since the
	// others were acted on, each reading the superseded entry; give the job two more.
	time.Sleep(2 * linkageInterval)
	if got, err := ocspQuery(p, certs[0]); err != nil || got != (ocspAnswer{"good", ""}) {
		t.Fatalf("J-LIS superseded: the derived certificate is %+v, %v; want good (kept for the grace period)", got, err)
	}
	if v := fetchShardCRL(t, p, certs[0]); v.lists(certs[0].serial) {
		t.Fatalf("J-LIS superseded: CRL number %s lists %s", v.number, certs[0].serial)
	}
	// The job's metrics: one hold, three revocations, and the held and the
	// superseded JPKI certificates waiting for a re-bind or their grace.
	if h, r := scrapeMetric(t, p, `inkan_linkage_actions_total{act="hold"}`), scrapeMetric(t, p, `inkan_linkage_actions_total{act="revoke"}`); h != 1 || r != 3 {
		t.Errorf("inkan_linkage_actions_total: hold %v, revoke %v; want 1 and 3", h, r)
	}
	if w := scrapeMetric(t, p, "inkan_linkage_waiting"); w != 2 {
		t.Errorf("inkan_linkage_waiting = %v; want 2 (affiliationChanged and superseded)", w)
	}

	// The superseded card's holder gets the renewed card and re-binds: the good
	// certificate is relinked, stays good, and waits for nothing any more.
	lab.run("hsm", "init-token", "--module", lab.module, "--label", "card1-renewed", "--so-pin-file", filepath.Join(lab.dir, "so.pin"), "--pin-file", lab.pin)
	lab.run("jpki-sim", "--dir", lab.jlis, "issue-card", "--module", lab.module, "--token", "card1-renewed", "--pin-file", lab.pin, "--reissue-of", jpkiSerials[0])
	lab.labels = append(lab.labels, "card1-renewed")
	out, err := lab.enrollRebind(p, len(lab.labels)-1, certs[0].serial, certs[0].key, "renewed.pem")
	if m := rebindLine.FindStringSubmatch(out); err != nil || m == nil || m[1] != "relinked" || !sameHexSerial(m[2], certs[0].serial) {
		t.Fatalf("re-bind of the kept certificate to the renewed card: %v\n%s; want relinked", err, out)
	}
	for deadline := time.Now().Add(10 * time.Second); scrapeMetric(t, p, "inkan_linkage_waiting") != 1; time.Sleep(200 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("inkan_linkage_waiting = %v after the re-bind; want 1 (affiliationChanged only)", scrapeMetric(t, p, "inkan_linkage_waiting"))
		}
	}
	if got, err := ocspQuery(p, certs[0]); err != nil || got != (ocspAnswer{"good", ""}) {
		t.Fatalf("the relinked certificate is %+v, %v; want good", got, err)
	}

	// The audit log: each act is a leaf by system, proven under a checkpoint; the
	// kept certificate has its issuance and nothing by system.
	for i, c := range cases {
		e := certs[i]
		leaves := auditProve(t, p, e.serial, func(leaves []provedLeaf) error {
			if !hasProvedLeaf(leaves, "cert.issued", "enrollment") {
				return fmt.Errorf("no cert.issued leaf by enrollment")
			}
			if c.act == "" && !hasProvedLeaf(leaves, "cert.relinked", "enrollment") {
				return fmt.Errorf("no cert.relinked leaf by enrollment")
			}
			if c.act != "" && !hasProvedLeaf(leaves, c.act, "system", c.actReason) {
				return fmt.Errorf("no %s leaf by system with %s", c.act, c.actReason)
			}
			return nil
		})
		for _, l := range leaves {
			if c.act == "" && l.actor == "system" {
				t.Errorf("J-LIS %s: the kept certificate %s has a leaf by system: %+v", c.jlisReason, e.serial, l)
			}
		}
	}
	t.Logf("whole test %s", time.Since(begin).Round(time.Millisecond))
}

var rebindLine = regexp.MustCompile(`(?m)^(released|relinked|reissued): certificate ([0-9a-f]+) (?:is bound to the new card|replaces ([0-9a-f]+) \(revoked as superseded\)): `)

// TestMoveStory: a holder moves. Enrolled with card A; J-LIS revokes A as
// affiliationChanged; the derived certificate goes on hold (OCSP revoked
// certificateHold, CRL entry Certificate Hold); J-LIS issues the same person a
// new card B with the new address (`jpki-sim issue-card --reissue-of`); another
// person's card cannot re-bind it; `inkan enroll --rebind` with B releases it:
// the same certificate is good again by OCSP, the next CRL of its shard no
// longer lists it, and the linkage job, which still reads A's revocation, does
// not hold it again; a second re-bind with B has nothing to do. The audit log
// holds the hold by system and the release and relink by enrollment; and when
// J-LIS later revokes B (keyCompromise), the job revokes the certificate
// through its new link. A second mover re-binds after the operator changed the
// profile (a new policy OID): the contents differ, so the certificate is
// replaced — same key, new serial, new policy — and the old one revoked
// superseded, as OCSP, the CRL and the audit log show.
func TestMoveStory(t *testing.T) {
	begin := time.Now()
	lab := newCardLab(t)
	p := startLinkageNode(t, lab)
	useTestCards(t, p)

	cardA := lab.cardSerial(lab.labels[0])
	e, err := lab.enroll(p, 0, "mover")
	if err != nil {
		t.Fatalf("enroll with card A: %v", err)
	}
	waitOCSPAnswer(t, p, e, ocspAnswer{"good", ""}, 10*time.Second)

	// The move: J-LIS revokes card A's certificate as affiliationChanged.
	lab.jlisRevoke(cardA, "affiliationChanged")
	moved := time.Now()
	waitOCSPAnswer(t, p, e, ocspAnswer{"revoked", "certificateHold"}, 15*time.Second)
	t.Logf("on hold by OCSP %s after J-LIS published the revocation", time.Since(moved).Round(time.Millisecond))
	held := waitCRLEntry(t, p, e, true, "Certificate Hold", 15*time.Second)
	t.Logf("CRL number %s lists it on hold", held.number)

	// The new card: the same person, a new address, in a new token.
	newAddress := "神奈川県横浜市中区日本大通一丁目"
	lab.run("hsm", "init-token", "--module", lab.module, "--label", "card1-new", "--so-pin-file", filepath.Join(lab.dir, "so.pin"), "--pin-file", lab.pin)
	out := lab.run("jpki-sim", "--dir", lab.jlis, "issue-card", "--module", lab.module, "--token", "card1-new", "--pin-file", lab.pin,
		"--reissue-of", cardA, "--address", newAddress, "--prefecture", "神奈川県", "--municipality", "横浜市")
	cardB := issuedSerial(t, out)
	lab.labels = append(lab.labels, "card1-new")
	b := len(lab.labels) - 1
	if cardB == cardA {
		t.Fatalf("the new card has the old serial %s", cardA)
	}

	// Another person's card may not re-bind it, even with the certificate's key,
	// and changes nothing; nor may the new card without the key (another key).
	if _, err := lab.enrollRebind(p, 1, e.serial, e.key, "other.pem"); problemName(err) != "rebind-not-same-person" {
		t.Fatalf("rebind with another person's card: %v; want rebind-not-same-person", err)
	}
	otherKey := filepath.Join(lab.dir, "other.key")
	if _, err := lab.enroll(p, 1, "other"); err != nil { // makes other.key, certified for holder 2
		t.Fatal(err)
	}
	if _, err := lab.enrollRebind(p, b, e.serial, otherKey, "other.pem"); problemName(err) != "rebind-key-mismatch" {
		t.Fatalf("rebind with the new card and another certificate's key: %v; want rebind-key-mismatch", err)
	}
	if _, err := lab.enrollRebind(p, b, e.serial, filepath.Join(lab.dir, "missing.key"), "other.pem"); err == nil {
		t.Fatal("rebind with a key file that does not exist: no error")
	}
	if got, err := ocspQuery(p, e); err != nil || got != (ocspAnswer{"revoked", "certificateHold"}) {
		t.Fatalf("after a refused re-bind: %+v, %v; want still on hold", got, err)
	}

	// The holder re-binds with card B and the certificate's own key.
	out, err = lab.enrollRebind(p, b, e.serial, e.key, "rebound.pem")
	if err != nil {
		t.Fatalf("inkan enroll --rebind: %v", err)
	}
	m := rebindLine.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("inkan enroll --rebind said:\n%s", out)
	}
	rebound := time.Now()
	if m[1] != "released" || !sameHexSerial(m[2], e.serial) {
		// The shipped profiles hold no address: the certificate's contents do not
		// change, so docs/policies.md says it is released, not replaced.
		t.Fatalf("re-bind: %q for %s; want the same certificate %s released", m[1], m[2], e.serial)
	}
	if got, err := os.ReadFile(filepath.Join(lab.dir, "rebound.pem")); err != nil || !bytes.Contains(got, pemBase64Body(t, e.leaf)) {
		t.Fatalf("--out does not hold the same certificate: %v", err)
	}

	// A relying party: good again by OCSP, and the shard's next CRL drops the
	// entry (a released hold leaves the CRL; RFC 5280 5.3.1 removeFromCRL is for
	// delta CRLs, which inkan does not publish).
	waitOCSPAnswer(t, p, e, ocspAnswer{"good", ""}, 10*time.Second)
	t.Logf("good again by OCSP %s after the re-bind returned", time.Since(rebound).Round(time.Millisecond))
	after := waitCRLEntry(t, p, e, false, "", 15*time.Second)
	if before, now := crlNumber(t, held), crlNumber(t, after); now <= before {
		t.Fatalf("CRL number %s without the entry is not after %s with it", after.number, held.number)
	}
	t.Logf("CRL number %s no longer lists it", after.number)

	// The job still reads A's revocation in every pass: the certificate is
	// linked to B now, so it is not held again.
	time.Sleep(3 * linkageInterval)
	if got, err := ocspQuery(p, e); err != nil || got != (ocspAnswer{"good", ""}) {
		t.Fatalf("%s after the re-bind: %+v, %v; want good (the job must not hold a re-bound certificate again)", 3*linkageInterval, got, err)
	}
	if v := fetchShardCRL(t, p, e); v.lists(e.serial) {
		t.Fatalf("CRL number %s lists the re-bound certificate again", v.number)
	}
	// Nothing is left to re-bind with the same card.
	if _, err := lab.enrollRebind(p, b, e.serial, e.key, "again.pem"); problemName(err) != "rebind-same-jpki-certificate" {
		t.Fatalf("second rebind with card B: %v; want rebind-same-jpki-certificate", err)
	}

	// Another mover, after the operator has changed the profile (a new
	// certificate policy OID): the contents for the new card differ, so the
	// re-bind replaces the certificate — the same key, a new serial — and
	// revokes the old one as superseded.
	cardA2 := lab.cardSerial(lab.labels[1])
	e2, err := lab.enroll(p, 1, "mover2")
	if err != nil {
		t.Fatalf("enroll the second mover: %v", err)
	}
	prof := policyShow(t, p, "authentication")
	changed := strings.Replace(prof, `certificatePolicies: ["1.3.6.1.4.1.32473.1.2"]`, `certificatePolicies: ["1.3.6.1.4.1.32473.1.3"]`, 1)
	if changed == prof {
		t.Fatalf("no certificatePolicies line to change in:\n%s", prof)
	}
	policyApplyNext(t, p, "authentication", changed)
	lab.run("hsm", "init-token", "--module", lab.module, "--label", "card2-new", "--so-pin-file", filepath.Join(lab.dir, "so.pin"), "--pin-file", lab.pin)
	lab.run("jpki-sim", "--dir", lab.jlis, "issue-card", "--module", lab.module, "--token", "card2-new", "--pin-file", lab.pin,
		"--reissue-of", cardA2, "--address", "兵庫県神戸市中央区加納町六丁目")
	lab.labels = append(lab.labels, "card2-new")
	waitOCSPAnswer(t, p, e2, ocspAnswer{"revoked", "certificateHold"}, 15*time.Second)
	out, err = lab.enrollRebind(p, len(lab.labels)-1, e2.serial, e2.key, "replaced.pem")
	m = rebindLine.FindStringSubmatch(out)
	if err != nil || m == nil || m[1] != "reissued" || !sameHexSerial(m[3], e2.serial) || sameHexSerial(m[2], e2.serial) {
		t.Fatalf("re-bind after a profile change: %v\n%s; want a new certificate replacing %s", err, out, e2.serial)
	}
	chain, err := os.ReadFile(filepath.Join(lab.dir, "replaced.pem"))
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(chain)
	if blk == nil {
		t.Fatalf("replaced.pem: no PEM")
	}
	newCert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if !sameHexSerial(newCert.SerialNumber.Text(16), m[2]) {
		t.Fatalf("--out holds %x, not the new certificate %s", newCert.SerialNumber, m[2])
	}
	if !bytes.Equal(newCert.RawSubjectPublicKeyInfo, e2.cert.RawSubjectPublicKeyInfo) {
		t.Fatalf("the replacement certifies another key")
	}
	if len(newCert.Policies) != 1 || newCert.Policies[0].String() != "1.3.6.1.4.1.32473.1.3" {
		t.Fatalf("the replacement's policies are %v; want the new version's 1.3.6.1.4.1.32473.1.3", newCert.Policies)
	}
	e3 := &enrolled{serial: hex.EncodeToString(newCert.SerialNumber.Bytes()), leaf: filepath.Join(lab.dir, "replaced.leaf.pem"), ca: e2.ca, cert: newCert}
	write(t, e3.leaf, string(pem.EncodeToMemory(blk)))
	if out, err := exec.Command("openssl", "verify", "-x509_strict", "-CAfile", e3.ca, e3.leaf).CombinedOutput(); err != nil {
		t.Fatalf("openssl verify of the replacement: %v: %s", err, out)
	}
	waitOCSPAnswer(t, p, e2, ocspAnswer{"revoked", "superseded"}, 10*time.Second)
	waitOCSPAnswer(t, p, e3, ocspAnswer{"good", ""}, 10*time.Second)
	waitCRLEntry(t, p, e2, true, "Superseded", 15*time.Second)
	if v := fetchShardCRL(t, p, e3); v.lists(e3.serial) {
		t.Fatalf("CRL number %s lists the replacement", v.number)
	}
	time.Sleep(2 * linkageInterval)
	if got, err := ocspQuery(p, e3); err != nil || got != (ocspAnswer{"good", ""}) {
		t.Fatalf("the replacement after two passes of the job: %+v, %v; want good", got, err)
	}
	auditProve(t, p, e2.serial, func(leaves []provedLeaf) error {
		if !hasProvedLeaf(leaves, "cert.held", "system") || !hasProvedLeaf(leaves, "cert.revoked", "enrollment", `"reason": 4`) {
			return fmt.Errorf("want a cert.held leaf by system and a cert.revoked leaf (reason 4) by enrollment")
		}
		return nil
	})

	auditProve(t, p, e.serial, func(leaves []provedLeaf) error {
		for _, want := range []struct{ typ, actor string }{
			{"cert.issued", "enrollment"}, {"cert.held", "system"}, {"cert.released", "enrollment"}, {"cert.relinked", "enrollment"},
		} {
			if !hasProvedLeaf(leaves, want.typ, want.actor) {
				return fmt.Errorf("no %s leaf by %s", want.typ, want.actor)
			}
		}
		for _, l := range leaves {
			if l.typ == "cert.revoked" {
				return fmt.Errorf("a cert.revoked leaf: %+v", l)
			}
		}
		return nil
	})

	// The link moved: when J-LIS revokes the NEW card's certificate, the job acts
	// on the re-bound certificate through it.
	lab.jlisRevoke(cardB, "keyCompromise")
	waitOCSPAnswer(t, p, e, ocspAnswer{"revoked", "keyCompromise"}, 15*time.Second)
	waitCRLEntry(t, p, e, true, "Key Compromise", 15*time.Second)
	t.Logf("whole test %s", time.Since(begin).Round(time.Millisecond))
}

// pemBase64Body is the base64 body of the first PEM block of file, as it appears in
// another PEM file holding the same certificate.
func pemBase64Body(t *testing.T, file string) []byte {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) < 3 {
		t.Fatalf("%s is not PEM", file)
	}
	return []byte(strings.Join(lines[1:len(lines)-1], "\n"))
}

// policyShow returns `inkan admin policy show name`, waiting for the leader to
// seed the shipped profiles.
func policyShow(t *testing.T, p *proc, name string) string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		out, err := p.runErr("admin", "--socket", filepath.Join(p.dataDir, "admin.sock"), "policy", "show", name)
		if err == nil {
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("policy show %s: %v", name, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// profileInt reads an integer field of a profile file, e.g.
// `maxCertificatesPerPerson: (\d+)`.
func profileInt(t *testing.T, data, pattern string) int {
	t.Helper()
	m := regexp.MustCompile(`(?m)` + pattern).FindStringSubmatch(data)
	if m == nil {
		t.Fatalf("no %s in the profile:\n%s", pattern, data)
	}
	n, err := strconv.Atoi(m[1])
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// policyApplyNext applies data, one version up from the active one, through
// `inkan admin policy apply`.
func policyApplyNext(t *testing.T, p *proc, name, data string) {
	t.Helper()
	version := regexp.MustCompile(`(?m)^version: (\d+)$`)
	v := profileInt(t, data, `^version: (\d+)$`)
	data = version.ReplaceAllString(data, fmt.Sprintf("version: %d", v+1))
	file := filepath.Join(p.home, name+"-lab.yaml")
	write(t, file, data)
	p.admin(t, "policy", "apply", "--yes", file)
}

// enrollPaced is lab.enroll that waits out the API's own per-address request
// limiter (1/s, bursts of 10; a challenge and an enrolment are two requests),
// which answers rate-limited too, so that what a test sees is the profile's
// decision. Each attempt uses the same key.
func enrollPaced(t *testing.T, lab *cardLab, p *proc, i int, name string) (*enrolled, error) {
	t.Helper()
	for tries := 0; ; tries++ {
		e, err := lab.enroll(p, i, name)
		if problemName(err) != "rate-limited" || profileLimited(err) || tries == 20 {
			return e, err
		}
		time.Sleep(2100 * time.Millisecond) // two requests' worth of tokens
	}
}

// profileLimited: the refusal is the profile's rate limit (its detail names the
// limit), not the API's request limiter ("rate limited").
func profileLimited(err error) bool {
	return err != nil && strings.Contains(err.Error(), "enrolments per")
}

// exportedLeaves reads an export's leaves.txt: every leaf, in order.
func exportedLeaves(t *testing.T, exp string) []audit.Leaf {
	t.Helper()
	f, err := os.Open(filepath.Join(exp, "leaves.txt"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []audit.Leaf
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 4<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) != 3 {
			t.Fatalf("leaves.txt line: %q", sc.Text())
		}
		data, err := base64.StdEncoding.DecodeString(fields[2])
		if err != nil {
			t.Fatal(err)
		}
		l, err := audit.ParseLeaf(data)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, l)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// enrollmentLeaves returns the serials of an export's leaves of type typ by actor.
func enrollmentLeaves(t *testing.T, exp, typ, actor string) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	for _, l := range exportedLeaves(t, exp) {
		if l.Type == typ && l.Actor == actor {
			out[l.Serial] = true
		}
	}
	return out
}

// TestEnrollmentLimits: through `inkan enroll`, the (N+1)th certificate of one
// person (N: the authentication profile's maxCertificatesPerPerson, read with
// `inkan admin policy show`) is refused as person-limit-reached, and a burst of
// enrolments from one address above the profile's per-client limit is refused
// as rate-limited. The audit log shows that the refused requests issued
// nothing: its cert.intent and cert.issued leaves by enrollment are exactly the
// certificates the subscribers received.
//
// The lab's profile raises the per-person rate above N: with the shipped rates
// (perPerson burst = maxCertificatesPerPerson) the (N+1)th within the hour is
// refused rate-limited instead — TestPersonLimitShippedRates.
func TestEnrollmentLimits(t *testing.T) {
	begin := time.Now()
	lab := newCardLab(t)
	p := startLinkageNode(t, lab)

	shipped := policyShow(t, p, "authentication")
	n := profileInt(t, shipped, `^\s*maxCertificatesPerPerson: (\d+)$`)
	perClient := profileInt(t, shipped, `^\s*perClient: \{every: [0-9a-z]+, burst: (\d+)\}$`)
	perPerson := profileInt(t, shipped, `^\s*perPerson: \{every: [0-9a-z]+, burst: (\d+)\}$`)
	if perClient < n+3 {
		t.Fatalf("the shipped per-client burst %d leaves too little room above the cap %d for this test", perClient, n)
	}
	lab1 := strings.Replace(shipped, `jpkiPolicies: ["1.2.392.200149.8.5.1.1.20"]`, `jpkiPolicies: ["1.2.392.200149.8.5.1.1.20", "1.2.392.200149.8.5.1.0.20"]`, 1)
	lab1 = regexp.MustCompile(`(?m)^(\s*perPerson: \{every: [0-9a-z]+, burst: )\d+\}$`).ReplaceAllString(lab1, fmt.Sprintf("${1}%d}", max(perPerson, n+1)))
	policyApplyNext(t, p, "authentication", lab1)
	t.Logf("authentication: at most %d certificates per person, %d enrolments per client address at once (shipped per-person burst %d, here %d)",
		n, perClient, perPerson, max(perPerson, n+1))

	// N certificates for holder 1, then the (N+1)th is refused.
	got := map[string]bool{}
	for k := range n {
		e, err := enrollPaced(t, lab, p, 0, fmt.Sprintf("cap%d", k+1))
		if err != nil {
			t.Fatalf("enrolment %d of %d for one person: %v", k+1, n, err)
		}
		got[e.cert.SerialNumber.Text(16)] = true
	}
	_, err := enrollPaced(t, lab, p, 0, fmt.Sprintf("cap%d", n+1))
	if problemName(err) != "person-limit-reached" {
		t.Fatalf("enrolment %d for one person: %v; want person-limit-reached", n+1, err)
	}
	t.Logf("certificate %d for one person refused: %v", n+1, err)

	// A burst from this address, by two other people, until the profile's
	// per-client bucket is empty. Every enrolment that reached the profile so far
	// took a token: the N issued, and the refused one unless the cap is checked
	// before the rate.
	var refused error
	burst := 0
	for k := 0; refused == nil && k <= perClient-n; k++ {
		e, err := enrollPaced(t, lab, p, 1+k%2, fmt.Sprintf("burst%d", k+1))
		switch {
		case err == nil:
			got[e.cert.SerialNumber.Text(16)] = true
			burst++
		case problemName(err) == "rate-limited":
			refused = err
		default:
			t.Fatalf("burst enrolment %d: %v", k+1, err)
		}
	}
	if refused == nil || !strings.Contains(refused.Error(), "per client address") {
		t.Fatalf("after %d enrolments from one address (%d in the burst): %v; want rate-limited by the per-client limit %d", n+burst, burst, refused, perClient)
	}
	if burst < perClient-n-1 || burst > perClient-n {
		t.Fatalf("the burst got %d certificates before the refusal; want %d or %d (the per-client burst %d less the %d enrolments before, the refused one counted or not)",
			burst, perClient-n-1, perClient-n, perClient, n)
	}
	t.Logf("burst: %d more enrolled, then refused: %v", burst, refused)

	// Nothing was issued, nor even intended, for the refused requests.
	for attempt := 1; ; attempt++ {
		exp := exportVerifiedAudit(t, p)
		intents, issued := enrollmentLeaves(t, exp, "cert.intent", "enrollment"), enrollmentLeaves(t, exp, "cert.issued", "enrollment")
		same := len(issued) == len(got) && len(intents) == len(got)
		for s := range got {
			same = same && issued[s] && intents[s]
		}
		if same {
			break
		}
		if attempt == 10 {
			t.Fatalf("the audit log's leaves by enrollment: %d cert.intent, %d cert.issued; the subscribers received %d certificates: %v",
				len(intents), len(issued), len(got), got)
		}
		time.Sleep(time.Second)
	}
	for typ, want := range map[string]float64{"person-limit-reached": 1} {
		if v := scrapeMetric(t, p, `inkan_enroll_refusals_total{type="`+typ+`"}`); v != want {
			t.Errorf("inkan_enroll_refusals_total{type=%q} = %v; want %v", typ, v, want)
		}
	}
	t.Logf("whole test %s", time.Since(begin).Round(time.Millisecond))
}

// TestPersonLimitShippedRates: with the shipped authentication profile as it is
// (only the test cards' policy added), the (N+1)th certificate of one person must
// be refused as person-limit-reached: the person holds N and may not hold more,
// however long they wait. (The shipped profiles' per-person burst equals their
// cap, so the cap must be checked before the rate limits take a token, or the
// (N+1)th enrolment is told to wait an hour instead.)
func TestPersonLimitShippedRates(t *testing.T) {
	lab := newCardLab(t)
	p := startLinkageNode(t, lab)
	shipped := policyShow(t, p, "authentication")
	n := profileInt(t, shipped, `^\s*maxCertificatesPerPerson: (\d+)$`)
	useTestCards(t, p)
	for k := range n {
		if _, err := enrollPaced(t, lab, p, 0, fmt.Sprintf("cap%d", k+1)); err != nil {
			t.Fatalf("enrolment %d of %d for one person: %v", k+1, n, err)
		}
	}
	if _, err := enrollPaced(t, lab, p, 0, fmt.Sprintf("cap%d", n+1)); problemName(err) != "person-limit-reached" {
		t.Fatalf("enrolment %d for one person: %v; want person-limit-reached", n+1, err)
	}
}

// TestOperatorHoldNotReleasedByRebind: an operator puts a derived certificate
// on hold (`inkan admin cert hold`, e.g. on a report of misuse). Its holder's
// card is later replaced (a move); a re-bind with the new card must not lift
// the operator's hold: only `inkan admin cert release` may. (The CA records
// who held a certificate; a re-bind lifts only the linkage job's holds.)
func TestOperatorHoldNotReleasedByRebind(t *testing.T) {
	lab := newCardLab(t)
	p := startLinkageNode(t, lab)
	useTestCards(t, p)
	cardA := lab.cardSerial(lab.labels[0])
	e, err := lab.enroll(p, 0, "suspect")
	if err != nil {
		t.Fatal(err)
	}
	p.admin(t, "cert", "hold", e.serial)
	waitOCSPAnswer(t, p, e, ocspAnswer{"revoked", "certificateHold"}, 10*time.Second)

	lab.run("hsm", "init-token", "--module", lab.module, "--label", "card1-new", "--so-pin-file", filepath.Join(lab.dir, "so.pin"), "--pin-file", lab.pin)
	lab.run("jpki-sim", "--dir", lab.jlis, "issue-card", "--module", lab.module, "--token", "card1-new", "--pin-file", lab.pin,
		"--reissue-of", cardA, "--address", "神奈川県横浜市中区日本大通一丁目")
	lab.labels = append(lab.labels, "card1-new")
	time.Sleep(2 * linkageInterval) // the job reads card A's revocation: the certificate is held already

	out, err := lab.enrollRebind(p, len(lab.labels)-1, e.serial, e.key, "rebound.pem")
	time.Sleep(500 * time.Millisecond)
	if got, qerr := ocspQuery(p, e); qerr != nil || got != (ocspAnswer{"revoked", "certificateHold"}) {
		t.Fatalf("after `inkan enroll --rebind` (%v, %q) the operator's hold is gone: OCSP %+v, %v", err, out, got, qerr)
	}
}
