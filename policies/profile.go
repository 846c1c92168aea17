package policies

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"embed"
	"encoding/asn1"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/zmap/zlint/v3/lint"
	"gopkg.in/yaml.v3"

	"github.com/inkan-pki/inkan/crlreason"
	"github.com/inkan-pki/inkan/jpki"
)

//go:embed profiles/*.yaml
var shipped embed.FS

// kind is what a profile's certificates are for. An authentication profile may carry
// no basic-4 data.
type kind string

// The profile kinds.
const (
	kindSigning        kind = "signing"
	kindAuthentication kind = "authentication"
)

// Profile is one policy file: what a derived certificate holds, who may enrol for
// it, and what happens to it when the JPKI certificate it was derived from is
// revoked. Field names are the file's keys.
type Profile struct {
	Name        string        `yaml:"name"`
	Version     uint64        `yaml:"version"`
	Kind        kind          `yaml:"kind"`
	Description string        `yaml:"description,omitempty"`
	Keys        []string      `yaml:"keys"`
	Validity    time.Duration `yaml:"validity"`
	// Template is an x509util (step-ca) certificate template. Its data:
	// .Pseudonym (hex keyed hash of the person record: in an authentication
	// profile the login pseudonym, in a signing profile another value that cannot
	// be turned into it), .JPKI.Name, .JPKI.BirthDate (YYYY-MM-DD), .JPKI.Gender,
	// .JPKI.Address; .JPKI is absent for authentication profiles.
	Template            string     `yaml:"template"`
	KeyUsage            []string   `yaml:"keyUsage"`
	ExtKeyUsage         []string   `yaml:"extKeyUsage,omitempty"`
	CertificatePolicies []string   `yaml:"certificatePolicies,omitempty"`
	SkipLints           []skipLint `yaml:"skipLints,omitempty"`
	Enrollment          enrollment `yaml:"enrollment"`
	Linkage             linkage    `yaml:"linkage"`
}

// skipLint names a zlint lint the CA must not run for this profile, and why.
type skipLint struct {
	Name   string `yaml:"name"`
	Reason string `yaml:"reason"`
}

// enrollment are the rules an enrolment must meet.
type enrollment struct {
	// JPKIPolicies are the JPKI certificate policy OIDs accepted.
	JPKIPolicies []string   `yaml:"jpkiPolicies"`
	Revocation   revocation `yaml:"revocation"`
	// MaxCertificatesPerPerson caps the unexpired, unrevoked derived certificates of
	// this profile one person holds.
	MaxCertificatesPerPerson int        `yaml:"maxCertificatesPerPerson"`
	RateLimits               RateLimits `yaml:"rateLimits"`
}

// revocation says which JPKI revocation sources may vouch for the card, and how old
// their evidence may be.
type revocation struct {
	Sources []string      `yaml:"sources"`
	MaxAge  time.Duration `yaml:"maxAge"`
}

// RateLimits are token buckets per person (keyed hash) and per client address.
type RateLimits struct {
	PerPerson Rate `yaml:"perPerson"`
	PerClient Rate `yaml:"perClient"`
}

// Rate is a token bucket: one token every Every, at most Burst held.
type Rate struct {
	Every time.Duration `yaml:"every"`
	Burst int           `yaml:"burst"`
}

// linkage maps J-LIS revocation reasons (their RFC 5280 names) to rules; Default
// covers every reason not listed.
type linkage struct {
	KeyCompromise        *rule `yaml:"keyCompromise,omitempty"`
	Unspecified          *rule `yaml:"unspecified,omitempty"`
	CACompromise         *rule `yaml:"cACompromise,omitempty"`
	AffiliationChanged   *rule `yaml:"affiliationChanged,omitempty"`
	Superseded           *rule `yaml:"superseded,omitempty"`
	CessationOfOperation *rule `yaml:"cessationOfOperation,omitempty"`
	CertificateHold      *rule `yaml:"certificateHold,omitempty"`
	Default              *rule `yaml:"default"`
}

// rule is what happens to a derived certificate when its JPKI certificate is revoked
// for one reason. Action "revoke": revoke at once with Reason. "hold": certificateHold
// until Grace has passed since the JPKI revocation, then revoke with Reason (a re-bind
// in between releases it). "none": leave it; with a Grace, revoke with Reason once
// Grace has passed unless re-bound.
type rule struct {
	Action string        `yaml:"action"`
	Grace  time.Duration `yaml:"grace,omitempty"`
	Reason string        `yaml:"reason,omitempty"`
}

// Rule returns the rule for a JPKI revocation reason.
func (l linkage) Rule(r crlreason.Reason) rule {
	var p *rule
	switch r {
	case crlreason.KeyCompromise:
		p = l.KeyCompromise
	case crlreason.Unspecified:
		p = l.Unspecified
	case crlreason.CACompromise:
		p = l.CACompromise
	case crlreason.AffiliationChanged:
		p = l.AffiliationChanged
	case crlreason.Superseded:
		p = l.Superseded
	case crlreason.CessationOfOperation:
		p = l.CessationOfOperation
	case crlreason.CertificateHold:
		p = l.CertificateHold
	}
	if p == nil {
		p = l.Default
	}
	if p == nil { // Parse refuses this; fail towards revocation.
		return rule{Action: actionRevoke, Reason: "unspecified"}
	}
	return *p
}

// The rule actions.
const (
	actionRevoke = "revoke"
	actionHold   = "hold"
	actionNone   = "none"
)

// Key types a profile may name.
var keyTypes = []string{"ecdsa-p256", "ecdsa-p384", "ecdsa-p521", "rsa-2048", "rsa-3072", "rsa-4096", "ed25519"}

var keyUsages = map[string]x509.KeyUsage{
	"digitalSignature": x509.KeyUsageDigitalSignature,
	"nonRepudiation":   x509.KeyUsageContentCommitment,
	"keyEncipherment":  x509.KeyUsageKeyEncipherment,
	"dataEncipherment": x509.KeyUsageDataEncipherment,
	"keyAgreement":     x509.KeyUsageKeyAgreement,
}

var extKeyUsages = map[string]x509.ExtKeyUsage{
	"clientAuth":      x509.ExtKeyUsageClientAuth,
	"emailProtection": x509.ExtKeyUsageEmailProtection,
	"codeSigning":     x509.ExtKeyUsageCodeSigning,
	"timeStamping":    x509.ExtKeyUsageTimeStamping,
}

// extKeyUsageOIDs are the extended key usages crypto/x509 has no constant for.
var extKeyUsageOIDs = map[string]asn1.ObjectIdentifier{
	// id-kp-documentSigning (RFC 9336): signing human-readable documents, and not
	// logging in: a signing certificate valid for anything could be used as a
	// login certificate, which would put the signer's name on the login.
	"documentSigning": {1, 3, 6, 1, 5, 5, 7, 3, 36},
}

// revocationReasons are the derived certificate's CRL reasons a rule may give.
var revocationReasons = []crlreason.Reason{crlreason.Unspecified, crlreason.KeyCompromise,
	crlreason.AffiliationChanged, crlreason.Superseded, crlreason.CessationOfOperation, crlreason.PrivilegeWithdrawn}

// joinReasons is "a, b, c" of the reasons' names.
func joinReasons(rs []crlreason.Reason) string {
	names := make([]string, len(rs))
	for i, r := range rs {
		names[i] = r.String()
	}
	return strings.Join(names, ", ")
}

// revocationReason is the reason a rule names, and whether a rule may give it.
func revocationReason(name string) (crlreason.Reason, bool) {
	r, ok := crlreason.Parse(name)
	return r, ok && slices.Contains(revocationReasons, r)
}

// ErrInvalid is matched by every error Parse returns for a bad file.
var ErrInvalid = errors.New("policies: invalid profile")

// problems collects "file:line: field: message" errors.
type problems struct {
	file string
	errs []error
}

func (p *problems) add(line int, field, format string, args ...any) {
	p.errs = append(p.errs, fmt.Errorf("%w: %s:%d: %s: %s", ErrInvalid, p.file, line, field, fmt.Sprintf(format, args...)))
}

func (p *problems) err() error { return errors.Join(p.errs...) }

// Parse reads and checks one profile file. file names it in errors. Every problem
// is reported (joined), each with its line and field: "signing.yaml:12: template:
// .JPKI.Name is basic-4 data, refused in an authentication profile".
func Parse(file string, data []byte) (*Profile, error) {
	pr := &problems{file: file}
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrInvalid, file, err)
	}
	if len(root.Content) == 0 {
		return nil, fmt.Errorf("%w: %s: empty file", ErrInvalid, file)
	}
	var p Profile
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&p); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrInvalid, file, err)
	}
	doc := root.Content[0]
	line := func(fields ...string) int { return lineOf(doc, fields...) }

	if p.Name == "" || strings.ContainsAny(p.Name, " /\t\n") {
		pr.add(line("name"), "name", "must be a non-empty word")
	}
	if p.Version == 0 {
		pr.add(line("version"), "version", "must be 1 or more")
	}
	if p.Kind != kindSigning && p.Kind != kindAuthentication {
		pr.add(line("kind"), "kind", "%q: must be signing or authentication", p.Kind)
	}
	if len(p.Keys) == 0 {
		pr.add(line("keys"), "keys", "name at least one key type")
	}
	for i, k := range p.Keys {
		if !slices.Contains(keyTypes, k) {
			pr.add(lineOf(doc, "keys", strconv.Itoa(i)), fmt.Sprintf("keys[%d]", i), "%q: one of %s", k, strings.Join(keyTypes, ", "))
		}
	}
	if p.Validity <= 0 {
		pr.add(line("validity"), "validity", "must be positive")
	}
	if len(p.KeyUsage) == 0 {
		pr.add(line("keyUsage"), "keyUsage", "name at least one key usage")
	}
	for i, u := range p.KeyUsage {
		if _, ok := keyUsages[u]; !ok {
			pr.add(lineOf(doc, "keyUsage", strconv.Itoa(i)), fmt.Sprintf("keyUsage[%d]", i), "%q is not a key usage an end-entity certificate may have", u)
		}
	}
	if p.Kind == kindAuthentication && slices.Contains(p.KeyUsage, "nonRepudiation") {
		pr.add(line("keyUsage"), "keyUsage", "nonRepudiation is for signing profiles")
	}
	for i, u := range p.ExtKeyUsage {
		_, known := extKeyUsageOIDs[u]
		if _, ok := extKeyUsages[u]; !ok && !known {
			pr.add(lineOf(doc, "extKeyUsage", strconv.Itoa(i)), fmt.Sprintf("extKeyUsage[%d]", i), "%q is not a known extended key usage", u)
		}
	}
	for i, o := range p.CertificatePolicies {
		if _, err := parseOID(o); err != nil {
			pr.add(lineOf(doc, "certificatePolicies", strconv.Itoa(i)), fmt.Sprintf("certificatePolicies[%d]", i), "%q: %v", o, err)
		}
	}
	registry := lint.GlobalRegistry()
	for i, s := range p.SkipLints {
		f := fmt.Sprintf("skipLints[%d]", i)
		if registry.ByName(s.Name) == nil {
			pr.add(lineOf(doc, "skipLints", strconv.Itoa(i), "name"), f+".name", "%q is not a zlint lint", s.Name)
		}
		if strings.TrimSpace(s.Reason) == "" {
			pr.add(lineOf(doc, "skipLints", strconv.Itoa(i)), f+".reason", "say why the lint is skipped")
		}
	}
	checkEnrollment(pr, doc, p.Enrollment)
	checkLinkage(pr, doc, p.Linkage)
	if p.Template == "" {
		pr.add(line("template"), "template", "missing")
	} else {
		checkTemplate(pr, lineOf(doc, "template"), &p)
	}
	if err := pr.err(); err != nil {
		return nil, err
	}
	return &p, nil
}

func checkEnrollment(pr *problems, doc *yaml.Node, e enrollment) {
	if len(e.JPKIPolicies) == 0 {
		pr.add(lineOf(doc, "enrollment", "jpkiPolicies"), "enrollment.jpkiPolicies", "name at least one accepted JPKI policy")
	}
	for i, o := range e.JPKIPolicies {
		if _, err := parseOID(o); err != nil {
			pr.add(lineOf(doc, "enrollment", "jpkiPolicies", strconv.Itoa(i)), fmt.Sprintf("enrollment.jpkiPolicies[%d]", i), "%q: %v", o, err)
		}
	}
	if len(e.Revocation.Sources) == 0 {
		pr.add(lineOf(doc, "enrollment", "revocation", "sources"), "enrollment.revocation.sources", "name crl, ocsp or both (none is never allowed)")
	}
	for i, s := range e.Revocation.Sources {
		if s != jpki.RevocationCRL && s != jpki.RevocationOCSP {
			pr.add(lineOf(doc, "enrollment", "revocation", "sources", strconv.Itoa(i)), fmt.Sprintf("enrollment.revocation.sources[%d]", i), "%q: crl or ocsp", s)
		}
	}
	if e.Revocation.MaxAge <= 0 {
		pr.add(lineOf(doc, "enrollment", "revocation", "maxAge"), "enrollment.revocation.maxAge", "must be positive")
	}
	if e.MaxCertificatesPerPerson <= 0 {
		pr.add(lineOf(doc, "enrollment", "maxCertificatesPerPerson"), "enrollment.maxCertificatesPerPerson", "must be 1 or more")
	}
	for _, r := range []struct {
		key  string
		rate Rate
	}{{"perPerson", e.RateLimits.PerPerson}, {"perClient", e.RateLimits.PerClient}} {
		if r.rate.Every <= 0 || r.rate.Burst <= 0 {
			pr.add(lineOf(doc, "enrollment", "rateLimits", r.key), "enrollment.rateLimits."+r.key, "every and burst must be positive")
		}
	}
}

func checkLinkage(pr *problems, doc *yaml.Node, l linkage) {
	if l.Default == nil {
		pr.add(lineOf(doc, "linkage"), "linkage.default", "missing: every reason needs a rule")
	}
	for key, r := range map[string]*rule{
		"keyCompromise": l.KeyCompromise, "unspecified": l.Unspecified, "cACompromise": l.CACompromise,
		"affiliationChanged": l.AffiliationChanged, "superseded": l.Superseded,
		"cessationOfOperation": l.CessationOfOperation, "certificateHold": l.CertificateHold, "default": l.Default,
	} {
		if r == nil {
			continue
		}
		f := "linkage." + key
		ln := lineOf(doc, "linkage", key)
		switch r.Action {
		case actionRevoke:
			if r.Grace != 0 {
				pr.add(ln, f+".grace", "revoke acts at once; use hold or none for a grace period")
			}
		case actionHold:
			if r.Grace <= 0 {
				pr.add(ln, f+".grace", "hold needs a positive grace period")
			}
		case actionNone:
			if r.Grace < 0 {
				pr.add(ln, f+".grace", "must not be negative")
			}
		default:
			pr.add(ln, f+".action", "%q: revoke, hold or none", r.Action)
		}
		needsReason := r.Action == actionRevoke || r.Action == actionHold || r.Grace > 0
		if _, ok := revocationReason(r.Reason); needsReason && !ok {
			pr.add(ln, f+".reason", "%q: the derived certificate's revocation reason, one of %s", r.Reason, joinReasons(revocationReasons))
		}
		if key == "keyCompromise" && r.Action != actionRevoke {
			pr.add(ln, f+".action", "a compromised JPKI key must revoke its derived certificates at once")
		}
	}
}

// lineOf finds the line of the value at a path of mapping keys and sequence indexes,
// or the closest ancestor's line when the path is absent.
func lineOf(n *yaml.Node, path ...string) int {
	line := n.Line
	for _, k := range path {
		switch n.Kind {
		case yaml.MappingNode:
			found := false
			for i := 0; i+1 < len(n.Content); i += 2 {
				if n.Content[i].Value == k {
					n = n.Content[i+1]
					line = n.Line
					found = true
					break
				}
			}
			if !found {
				return line
			}
		case yaml.SequenceNode:
			i, err := strconv.Atoi(k)
			if err != nil || i < 0 || i >= len(n.Content) {
				return line
			}
			n = n.Content[i]
			line = n.Line
		default:
			return line
		}
	}
	return line
}

// parseOID parses a dotted OID whose arcs fit in 31 bits: zcrypto (zlint) and
// encoding/asn1 refuse larger ones, so a 2.25.<UUID> OID would fail every lint run
// and many relying parties' parsers.
func parseOID(s string) (x509.OID, error) {
	parts := strings.Split(s, ".")
	if len(parts) < 2 {
		return x509.OID{}, errors.New("not a dotted OID")
	}
	for _, part := range parts {
		if _, err := strconv.ParseUint(part, 10, 31); err != nil {
			return x509.OID{}, errors.New("not a dotted OID with arcs below 2^31")
		}
	}
	oid, err := x509.ParseOID(s)
	if err != nil {
		return x509.OID{}, errors.New("not a dotted OID")
	}
	return oid, nil
}

// Set is the active profiles, by name, with the key that makes pseudonyms.
type Set struct {
	profiles     map[string]*Profile
	defaultName  string
	pseudonymKey []byte
}

// shippedEarlier are the SHA-256 sums of the files shipped before the current one,
// by profile name: a cluster whose active version of a profile is one of them,
// byte for byte, runs a shipped profile no operator changed, which Seed may
// upgrade (ca/policy.Seed).
var shippedEarlier = map[string][]string{
	// signing v1: no extended key usage, so valid for logging in too.
	"signing": {"4259d336c7d95b8e45b34f47737d2c9ff886cd44efa918dff0d2c9abc77753c7"},
}

// Upgrades reports whether p may replace its profile's active file, data at
// version, as a shipped fix: data is, byte for byte, a file shipped before (an
// untouched shipped profile, no operator's), and p is a later version.
func (p *Profile) Upgrades(data []byte, version uint64) bool {
	sum := sha256.Sum256(data)
	return slices.Contains(shippedEarlier[p.Name], hex.EncodeToString(sum[:])) && p.Version > version
}

// Shipped returns the shipped profile files, for Load or for an operator to start
// from.
func Shipped() fs.FS {
	sub, err := fs.Sub(shipped, "profiles")
	if err != nil {
		panic(err) // the embed pattern guarantees the directory
	}
	return sub
}

// Load parses every *.yaml file of fsys as a profile and returns the set.
// pseudonymKey (at least jpki.MinHashKeyLen bytes, a secret) keys the person
// hashes certificates carry. defaultProfile is what an enrolment that names none
// gets. Every problem of every file is reported.
func Load(fsys fs.FS, pseudonymKey []byte, defaultProfile string) (*Set, error) {
	if len(pseudonymKey) < jpki.MinHashKeyLen {
		return nil, fmt.Errorf("%w: pseudonym key shorter than %d bytes", ErrInvalid, jpki.MinHashKeyLen)
	}
	files, err := fs.Glob(fsys, "*.yaml")
	if err != nil {
		return nil, fmt.Errorf("policies: list profiles: %w", err)
	}
	s := &Set{profiles: map[string]*Profile{}, defaultName: defaultProfile, pseudonymKey: slices.Clone(pseudonymKey)}
	var errs []error
	for _, f := range files {
		data, err := fs.ReadFile(fsys, f)
		if err != nil {
			errs = append(errs, fmt.Errorf("policies: read %s: %w", f, err))
			continue
		}
		p, err := Parse(path.Base(f), data)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if _, dup := s.profiles[p.Name]; dup {
			errs = append(errs, fmt.Errorf("%w: %s:%d: name: profile %q defined twice", ErrInvalid, f, 1, p.Name))
			continue
		}
		s.profiles[p.Name] = p
	}
	if len(files) == 0 {
		errs = append(errs, fmt.Errorf("%w: no *.yaml profile found", ErrInvalid))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if _, ok := s.profiles[defaultProfile]; !ok {
		return nil, fmt.Errorf("%w: default profile %q is not defined", ErrInvalid, defaultProfile)
	}
	return s, nil
}

// Profile returns the named profile. It is shared with the set: read it, never
// change it.
func (s *Set) Profile(name string) (*Profile, bool) {
	p, ok := s.profiles[name]
	return p, ok
}

// Names lists the profiles, sorted.
func (s *Set) Names() []string {
	var n []string
	for k := range s.profiles {
		n = append(n, k)
	}
	slices.Sort(n)
	return n
}
