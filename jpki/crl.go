package jpki

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math/big"
	"net/http"
	"net/url"
	"os"
	"slices"
	"sort"
	"time"

	"github.com/inkan-pki/inkan/crlreason"
	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// Defaults of crlSourceOptions and ocspSourceOptions.
const (
	// defaultCRLMaxAge: a CRL whose thisUpdate is older than this is stale. J-LIS
	// publishes daily; 48 h leaves a day for the operator's job to be late.
	defaultCRLMaxAge = 48 * time.Hour
	// defaultCRLRefresh: how often a URL source fetches again (a conditional GET:
	// an unchanged CRL is not downloaded again), and how often Run refreshes.
	defaultCRLRefresh = 5 * time.Minute
	// defaultHTTPTimeout bounds one HTTP exchange (CRL fetch or OCSP query).
	defaultHTTPTimeout = 30 * time.Second
	// defaultCRLMaxBytes bounds the CRL read (J-LIS CRLs list every unexpired revoked
	// certificate of the country and are large).
	defaultCRLMaxBytes = 512 << 20
)

// clockSkew is how far in the future (relative to the verification time) a CRL's or
// OCSP response's thisUpdate may lie before it is refused.
const clockSkew = 5 * time.Minute

// crlRetry is the least time between two failed attempts to fetch a CRL URL.
const crlRetry = 30 * time.Second

var (
	oidExtIssuingDP         = asn1.ObjectIdentifier{2, 5, 29, 28}
	oidExtDeltaCRLIndicator = asn1.ObjectIdentifier{2, 5, 29, 27}
)

// crlSourceOptions configures a CRLSource. Exactly one of URL and File is set.
type crlSourceOptions struct {
	// URL is fetched with HTTP GET; the body is a DER CRL or PEM "X509 CRL" blocks.
	URL string
	// File is read, and read again whenever its modification time or size changes.
	// An operator's job drops the CRL there (write a temporary file and rename it).
	// DER or PEM as for URL.
	File string
	// Anchors verify the CRL's signature (the signer is picked by signature; it must
	// be valid at the CRL's thisUpdate).
	Anchors *anchorSet
	// MaxAge: a CRL whose thisUpdate is older than this is stale (DefaultCRLMaxAge if 0).
	MaxAge time.Duration
	// Refresh: a URL source fetches again after this long (DefaultCRLRefresh if 0), or
	// as soon as a CRL passes its nextUpdate.
	Refresh time.Duration
	// MaxDataAge, if positive, bounds how long ago this source last refreshed its
	// data (a fetch answered, or a check of the file) for Status to answer: past it,
	// Status fails with ErrRevocationStale, however fresh the CRL's own dates are,
	// so that a node whose refreshes fail stops vouching for cards that other nodes
	// already know to be revoked.
	MaxDataAge time.Duration
	// Client fetches URL (one with DefaultHTTPTimeout if nil).
	Client *http.Client
	// MaxBytes bounds what is read (DefaultCRLMaxBytes if 0).
	MaxBytes int64
	// Logger receives load and fetch events (slog.Default() if nil).
	Logger *slog.Logger
}

// CRLSource answers revocation questions from J-LIS CRLs held in memory. It verifies
// each CRL against the anchors before use and indexes its entries by serial. It fails
// closed: no CRL, an unverifiable CRL, a CRL that does not cover the certificate (by
// issuer name and issuingDistributionPoint) → ErrRevocationUnknown; a CRL older than
// MaxAge or past its nextUpdate → ErrRevocationStale (except that a certificate it
// lists stays revoked: J-LIS never lifts a revocation). When a new CRL fails to load,
// the last verified one stays in use while it is fresh. Safe for concurrent use.
type CRLSource struct {
	opts crlSourceOptions
	log  *slog.Logger
	// lock is a one-slot semaphore serialising loads, so a waiter can give up on ctx.
	lock chan struct{}

	// Guarded by lock.
	set                   *crlSet
	lastErr               error
	loadedMod, failedMod  time.Time // file: what is loaded / what failed to load
	loadedSize, failedSz  int64
	fetchedAt, lastFailed time.Time // url
	etag, lastModified    string    // url: validators of the CRL in use, for a conditional GET
	// refreshedAt is when the data was last known current: the time given to the
	// last refresh that fetched (or was told "not modified") or checked the file.
	refreshedAt time.Time
}

// newCRLSource checks opts and returns the source. It reads nothing yet: the first
// Status (or Refresh) loads the CRL.
func newCRLSource(opts crlSourceOptions) (*CRLSource, error) {
	switch {
	case (opts.URL == "") == (opts.File == ""):
		return nil, badSetup("jpki: CRL source: set exactly one of URL and File")
	case opts.Anchors == nil || len(opts.Anchors.certs) == 0:
		return nil, badSetup("jpki: CRL source: no anchors")
	case opts.MaxAge < 0 || opts.Refresh < 0 || opts.MaxBytes < 0 || opts.MaxDataAge < 0:
		return nil, badSetup("jpki: CRL source: negative MaxAge, Refresh, MaxDataAge or MaxBytes")
	}
	if opts.URL != "" {
		if err := checkHTTPURL(opts.URL); err != nil {
			return nil, badSetup("jpki: CRL source: %w", err)
		}
	}
	if opts.MaxAge == 0 {
		opts.MaxAge = defaultCRLMaxAge
	}
	if opts.Refresh == 0 {
		opts.Refresh = defaultCRLRefresh
	}
	if opts.MaxBytes == 0 {
		opts.MaxBytes = defaultCRLMaxBytes
	}
	if opts.Client == nil {
		opts.Client = &http.Client{Timeout: defaultHTTPTimeout}
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	where := opts.File
	if where == "" {
		where = opts.URL
	}
	return &CRLSource{
		opts: opts,
		log:  log.With("component", "jpki", "crl_source", where),
		lock: make(chan struct{}, 1),
	}, nil
}

// Status implements revocationSource. With MaxDataAge set, it fails with
// ErrRevocationStale when the source has not refreshed its data within MaxDataAge
// before at.
func (s *CRLSource) Status(ctx context.Context, cert, _ *x509.Certificate, at time.Time) (Status, error) {
	set, err := s.current(ctx, at, false)
	if err != nil {
		return Status{}, err
	}
	if max := s.opts.MaxDataAge; max > 0 {
		if refreshed := s.RefreshedAt(); at.Sub(refreshed) > max {
			return Status{}, fmt.Errorf("%w: this node last refreshed its revocation data at %s, more than %v before %s",
				ErrRevocationStale, refreshed.UTC().Format(time.RFC3339), max, at.UTC().Format(time.RFC3339))
		}
	}
	dps := crlDistributionPoints(cert)
	var covering []*indexedCRL
	for _, c := range set.crls {
		if c.covers(cert, dps) {
			covering = append(covering, c)
		}
	}
	if len(covering) == 0 {
		return Status{}, fmt.Errorf("%w: no loaded CRL covers the certificate (issuer or distribution point differs)", ErrRevocationUnknown)
	}
	serial := cert.SerialNumber.Bytes()
	for _, c := range covering {
		if i, ok := c.bySerial[string(serial)]; ok {
			e := c.entries[i]
			return Status{State: stateRevoked, Reason: e.reason, RevokedAt: e.at, ThisUpdate: c.thisUpdate, NextUpdate: c.nextUpdate}, nil
		}
	}
	for _, c := range covering {
		if err := c.fresh(at, s.opts.MaxAge); err != nil {
			return Status{}, err
		}
	}
	c := covering[0]
	return Status{State: StateGood, ThisUpdate: c.thisUpdate, NextUpdate: c.nextUpdate}, nil
}

// RevokedEntry is one entry of a verified CRL.
type RevokedEntry struct {
	// RawIssuer is the DER of the CRL's issuer name.
	RawIssuer []byte
	Serial    *big.Int
	Reason    crlreason.Reason
	RevokedAt time.Time
}

// CertHash is the keyed hash of the revoked certificate: equal to
// SignatureCertificate.CertHash of that certificate under the same key.
func (e RevokedEntry) CertHash(key []byte) Hash {
	return certHash(key, e.RawIssuer, e.Serial)
}

// RevokedSince lists the entries of the loaded CRLs revoked at or after since, oldest
// first, for matching revoked JPKI certificates against derived-certificate links. It
// fails as Status does when the CRLs are missing, unverifiable or stale at at.
func (s *CRLSource) RevokedSince(ctx context.Context, since, at time.Time) ([]RevokedEntry, error) {
	set, err := s.current(ctx, at, false)
	if err != nil {
		return nil, err
	}
	var out []RevokedEntry
	for _, c := range set.crls {
		if err := c.fresh(at, s.opts.MaxAge); err != nil {
			return nil, err
		}
		i := sort.Search(len(c.entries), func(i int) bool { return !c.entries[i].at.Before(since) })
		for _, e := range c.entries[i:] {
			out = append(out, RevokedEntry{RawIssuer: c.rawIssuer, Serial: new(big.Int).SetBytes(e.serial), Reason: e.reason, RevokedAt: e.at})
		}
	}
	slices.SortStableFunc(out, func(a, b RevokedEntry) int { return a.RevokedAt.Compare(b.RevokedAt) })
	return out, nil
}

// Refresh loads the CRL now (a file source re-reads the file if it changed; a URL
// source fetches), for a node to fail fast at start or to refresh on its own schedule.
// It returns the error of the load, or nil if a verified CRL is in use afterwards.
func (s *CRLSource) Refresh(ctx context.Context, at time.Time) error {
	_, err := s.current(ctx, at, true)
	return err
}

// RefreshedAt is when the source last knew its data current: the time of the last
// refresh that fetched the CRL (or was told it had not changed) or checked the
// file. It is zero before the first.
func (s *CRLSource) RefreshedAt() time.Time {
	s.lock <- struct{}{}
	defer func() { <-s.lock }()
	return s.refreshedAt
}

// Run refreshes the source every interval (Refresh; DefaultCRLRefresh if 0) until
// ctx ends, so that every node of a cluster holds revocation data of the same age,
// whether or not it answers enrolments or runs the linkage job. A failed refresh
// is logged by the refresh itself; the next is tried at the next tick.
func (s *CRLSource) Run(ctx context.Context, interval time.Duration) {
	if interval <= 0 {
		interval = s.opts.Refresh
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		_ = s.Refresh(ctx, time.Now())
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// current returns the verified set, loading or fetching first when due.
func (s *CRLSource) current(ctx context.Context, at time.Time, force bool) (*crlSet, error) {
	select {
	case s.lock <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: waiting for the CRL: %w", ErrRevocationUnknown, ctx.Err())
	}
	defer func() { <-s.lock }()
	if s.opts.File != "" {
		s.refreshFile(at, force)
	} else {
		s.refreshURL(ctx, at, force)
	}
	if s.set == nil {
		return nil, fmt.Errorf("%w: no verified CRL: %w", ErrRevocationUnknown, s.lastErr)
	}
	if force && s.lastErr != nil {
		return s.set, s.lastErr
	}
	return s.set, nil
}

// sameStatError says whether last, the previous refresh's error, is a failed
// stat of the same cause (an errno) as err: a file that stays missing is
// logged once, a change of cause again.
func sameStatError(last, err error) bool {
	var pe *fs.PathError
	return last != nil && errors.As(last, &pe) && errors.Is(err, pe.Err)
}

func (s *CRLSource) refreshFile(at time.Time, force bool) {
	fi, err := os.Stat(s.opts.File)
	if err != nil {
		if !sameStatError(s.lastErr, err) {
			s.log.Error("jpki: CRL file unreadable", "err", err)
		}
		s.lastErr = err
		return
	}
	mod, size := fi.ModTime(), fi.Size()
	if s.set != nil && mod.Equal(s.loadedMod) && size == s.loadedSize {
		s.lastErr = nil
		s.refreshedAt = latest(s.refreshedAt, at)
		return
	}
	if !force && mod.Equal(s.failedMod) && size == s.failedSz {
		return // the same bad file: do not parse it again on every call
	}
	data, err := readFileLimited(s.opts.File, s.opts.MaxBytes)
	if err == nil {
		err = s.install(data)
	}
	if err != nil {
		s.failedMod, s.failedSz, s.lastErr = mod, size, err
		s.log.Error("jpki: CRL file not loaded", "err", err, "kept_previous", s.set != nil)
		return
	}
	s.loadedMod, s.loadedSize, s.lastErr = mod, size, nil
	s.refreshedAt = latest(s.refreshedAt, at)
}

// latest is the later of two times.
func latest(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

func (s *CRLSource) refreshURL(ctx context.Context, at time.Time, force bool) {
	due := force || s.set == nil || at.Sub(s.fetchedAt) >= s.opts.Refresh || at.Before(s.fetchedAt) || s.set.pastNextUpdate(at)
	if !due {
		return
	}
	if !force && !s.lastFailed.IsZero() && at.Sub(s.lastFailed) < crlRetry && at.Sub(s.lastFailed) >= 0 {
		return
	}
	data, etag, lastMod, err := s.fetch(ctx)
	if err == nil && data != nil {
		err = s.install(data)
	}
	if err != nil {
		if ctx.Err() == nil {
			s.lastFailed = at // a caller that gave up does not hold back the next one
		}
		s.lastErr = err
		s.log.Error("jpki: CRL not fetched", "err", err, "kept_previous", s.set != nil)
		return
	}
	if data != nil {
		s.etag, s.lastModified = etag, lastMod
	}
	s.fetchedAt, s.lastFailed, s.lastErr = at, time.Time{}, nil
	s.refreshedAt = latest(s.refreshedAt, at)
}

// fetch GETs the CRL, conditionally when a CRL is in use (If-None-Match,
// If-Modified-Since with its validators): data is nil when the server says it has
// not changed, so a refresh every few minutes does not download a large CRL again.
func (s *CRLSource) fetch(ctx context.Context) (data []byte, etag, lastModified string, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.opts.URL, nil)
	if err != nil {
		return nil, "", "", err
	}
	if s.set != nil {
		if s.etag != "" {
			req.Header.Set("If-None-Match", s.etag)
		}
		if s.lastModified != "" {
			req.Header.Set("If-Modified-Since", s.lastModified)
		}
	}
	resp, err := s.opts.Client.Do(req)
	if err != nil {
		return nil, "", "", err
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNotModified && s.set != nil:
		return nil, "", "", nil
	case resp.StatusCode != http.StatusOK:
		return nil, "", "", fmt.Errorf("GET: HTTP %s", resp.Status)
	}
	data, err = readLimited(resp.Body, s.opts.MaxBytes)
	if err != nil {
		return nil, "", "", err
	}
	return data, resp.Header.Get("ETag"), resp.Header.Get("Last-Modified"), nil
}

// install verifies and indexes data and makes it the set in use, unless it is older
// than the set in use (a rollback).
func (s *CRLSource) install(data []byte) error {
	set, err := buildCRLSet(data, s.opts.Anchors)
	if err != nil {
		return err
	}
	if s.set != nil && set.newest().Before(s.set.newest()) {
		return fmt.Errorf("%w: new CRL's thisUpdate %s is older than the loaded one's %s", ErrRevocationUnknown,
			set.newest().UTC().Format(time.RFC3339), s.set.newest().UTC().Format(time.RFC3339))
	}
	s.set = set
	for _, c := range set.crls {
		s.log.Info("jpki: CRL loaded", "this_update", c.thisUpdate, "next_update", c.nextUpdate, "entries", len(c.entries))
	}
	return nil
}

// crlSet is the CRLs of one load, each verified and indexed.
type crlSet struct {
	crls []*indexedCRL
}

func (s *crlSet) newest() time.Time {
	var t time.Time
	for _, c := range s.crls {
		if c.thisUpdate.After(t) {
			t = c.thisUpdate
		}
	}
	return t
}

func (s *crlSet) pastNextUpdate(at time.Time) bool {
	for _, c := range s.crls {
		if !c.nextUpdate.IsZero() && at.After(c.nextUpdate) {
			return true
		}
	}
	return false
}

// indexedCRL is a verified CRL reduced to what the checks need: its entries sorted by
// revocation time (for RevokedSince) and a map from serial to entry (for Status).
type indexedCRL struct {
	rawIssuer              []byte
	issuerName             string // canonical
	thisUpdate, nextUpdate time.Time
	idp                    *issuingDP // nil: the CRL covers every certificate of its issuer
	entries                []crlEntry
	bySerial               map[string]int
}

type crlEntry struct {
	serial []byte
	at     time.Time
	reason crlreason.Reason
}

// covers reports whether the CRL speaks for cert: same issuer name, and a scope
// (issuingDistributionPoint) that includes it. Scopes this package cannot reason about
// (indirect CRLs, reason subsets, CA- or attribute-only) never cover.
func (c *indexedCRL) covers(cert *x509.Certificate, dps [][]byte) bool {
	if !bytes.Equal(c.rawIssuer, cert.RawIssuer) && c.issuerName != canonicalName(cert.RawIssuer) {
		return false
	}
	return c.idp == nil || c.idp.covers(dps)
}

// fresh checks the CRL's age at time at.
func (c *indexedCRL) fresh(at time.Time, maxAge time.Duration) error {
	switch {
	case c.thisUpdate.After(at.Add(clockSkew)):
		return fmt.Errorf("%w: CRL thisUpdate %s lies after %s", ErrRevocationUnknown,
			c.thisUpdate.UTC().Format(time.RFC3339), at.UTC().Format(time.RFC3339))
	case at.Sub(c.thisUpdate) > maxAge:
		return fmt.Errorf("%w: CRL thisUpdate %s is older than %v at %s", ErrRevocationStale,
			c.thisUpdate.UTC().Format(time.RFC3339), maxAge, at.UTC().Format(time.RFC3339))
	case !c.nextUpdate.IsZero() && at.After(c.nextUpdate):
		return fmt.Errorf("%w: CRL nextUpdate %s has passed at %s", ErrRevocationStale,
			c.nextUpdate.UTC().Format(time.RFC3339), at.UTC().Format(time.RFC3339))
	}
	return nil
}

// buildCRLSet parses data (one DER CRL, or PEM "X509 CRL" blocks), verifies and
// indexes every CRL in it. One bad CRL refuses the whole load.
func buildCRLSet(data []byte, anchors *anchorSet) (*crlSet, error) {
	ders, err := splitCRLs(data)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrRevocationUnknown, err)
	}
	set := &crlSet{}
	for i, der := range ders {
		c, err := indexCRL(der, anchors)
		if err != nil {
			return nil, fmt.Errorf("%w: CRL %d: %w", ErrRevocationUnknown, i+1, err)
		}
		set.crls = append(set.crls, c)
	}
	return set, nil
}

func splitCRLs(data []byte) ([][]byte, error) {
	trimmed := bytes.TrimSpace(data)
	if !bytes.HasPrefix(trimmed, []byte("-----BEGIN")) {
		if len(trimmed) == 0 {
			return nil, errors.New("empty CRL")
		}
		return [][]byte{data}, nil
	}
	var out [][]byte
	rest := trimmed
	for n := 1; ; n++ {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "X509 CRL" {
			return nil, fmt.Errorf("PEM block %d is %q, want X509 CRL", n, b.Type)
		}
		out = append(out, b.Bytes)
	}
	if len(out) == 0 {
		return nil, errors.New("no X509 CRL PEM block")
	}
	return out, nil
}

// indexCRL parses der, picks the anchor whose key verifies its signature (and that was
// valid at its thisUpdate), refuses what it cannot process, and indexes the entries.
func indexCRL(der []byte, anchors *anchorSet) (*indexedCRL, error) {
	rl, err := x509.ParseRevocationList(der)
	if err != nil {
		return nil, err
	}
	var signer *x509.Certificate
	sigOK := false
	for _, a := range anchors.certs {
		if rl.CheckSignatureFrom(a) != nil {
			continue
		}
		sigOK = true
		if !rl.ThisUpdate.Before(a.NotBefore) && !rl.ThisUpdate.After(a.NotAfter) {
			signer = a
			break
		}
	}
	switch {
	case !sigOK:
		return nil, errors.New("signature does not verify with any configured anchor")
	case signer == nil:
		return nil, errors.New("signed by an anchor that was not valid at the CRL's thisUpdate")
	}
	c := &indexedCRL{
		rawIssuer:  rl.RawIssuer,
		issuerName: canonicalName(rl.RawIssuer),
		thisUpdate: rl.ThisUpdate,
		nextUpdate: rl.NextUpdate,
	}
	for _, ext := range rl.Extensions {
		switch {
		case ext.Id.Equal(oidExtIssuingDP):
			if c.idp, err = parseIssuingDP(ext.Value); err != nil {
				return nil, err
			}
		case ext.Id.Equal(oidExtDeltaCRLIndicator):
			return nil, errors.New("a delta CRL; a complete CRL is required")
		case ext.Critical:
			return nil, fmt.Errorf("unprocessed critical extension %s", ext.Id)
		}
	}
	c.entries = make([]crlEntry, 0, len(rl.RevokedCertificateEntries))
	for _, e := range rl.RevokedCertificateEntries {
		if !validReason(e.ReasonCode) || crlreason.Reason(e.ReasonCode) == crlreason.RemoveFromCRL {
			return nil, fmt.Errorf("entry with reason code %d", e.ReasonCode)
		}
		for _, ext := range e.Extensions {
			if ext.Critical { // certificateIssuer (indirect CRL) or unknown
				return nil, fmt.Errorf("entry with unprocessed critical extension %s", ext.Id)
			}
		}
		if e.SerialNumber == nil || e.SerialNumber.Sign() < 0 {
			return nil, errors.New("entry with a negative serial number")
		}
		c.entries = append(c.entries, crlEntry{serial: e.SerialNumber.Bytes(), at: e.RevocationTime, reason: crlreason.Reason(e.ReasonCode)})
	}
	slices.SortStableFunc(c.entries, func(a, b crlEntry) int { return a.at.Compare(b.at) })
	c.bySerial = make(map[string]int, len(c.entries))
	for i, e := range c.entries {
		if _, dup := c.bySerial[string(e.serial)]; !dup { // keep the earliest
			c.bySerial[string(e.serial)] = i
		}
	}
	return c, nil
}

// issuingDP is a CRL's issuingDistributionPoint extension (RFC 5280 §5.2.5).
type issuingDP struct {
	name                                    []byte // DER of the DistributionPointName; nil if absent
	onlyCA, onlyAttr, indirect, someReasons bool
}

func (d *issuingDP) covers(dps [][]byte) bool {
	if d.onlyCA || d.onlyAttr || d.indirect || d.someReasons {
		return false
	}
	if d.name == nil {
		return true
	}
	for _, n := range dps {
		if bytes.Equal(n, d.name) {
			return true
		}
	}
	return false
}

func parseIssuingDP(v []byte) (*issuingDP, error) {
	in := cryptobyte.String(v)
	var seq cryptobyte.String
	if !in.ReadASN1(&seq, cbasn1.SEQUENCE) || !in.Empty() {
		return nil, errors.New("malformed issuingDistributionPoint")
	}
	d := &issuingDP{}
	var dpn cryptobyte.String
	var present bool
	if !seq.ReadOptionalASN1(&dpn, &present, cbasn1.Tag(0).Constructed().ContextSpecific()) {
		return nil, errors.New("malformed issuingDistributionPoint")
	}
	if present {
		var name cryptobyte.String
		var tag cbasn1.Tag
		if !dpn.ReadAnyASN1Element(&name, &tag) || !dpn.Empty() {
			return nil, errors.New("malformed issuingDistributionPoint name")
		}
		d.name = append([]byte(nil), name...)
	}
	flag := func(n int, out *bool) bool {
		var b cryptobyte.String
		var ok bool
		if !seq.ReadOptionalASN1(&b, &ok, cbasn1.Tag(n).ContextSpecific()) {
			return false
		}
		if ok {
			if len(b) != 1 || (b[0] != 0 && b[0] != 0xff) {
				return false
			}
			*out = b[0] == 0xff
		}
		return true
	}
	var onlyUser bool
	if !flag(1, &onlyUser) || !flag(2, &d.onlyCA) {
		return nil, errors.New("malformed issuingDistributionPoint flags")
	}
	var reasons cryptobyte.String
	if !seq.ReadOptionalASN1(&reasons, &d.someReasons, cbasn1.Tag(3).ContextSpecific()) {
		return nil, errors.New("malformed issuingDistributionPoint reasons")
	}
	if !flag(4, &d.indirect) || !flag(5, &d.onlyAttr) || !seq.Empty() {
		return nil, errors.New("malformed issuingDistributionPoint flags")
	}
	return d, nil
}

// crlDistributionPoints returns the DER of each DistributionPointName in cert's CRL
// distribution points (JPKI uses a directoryName per municipality, which crypto/x509
// drops). A malformed extension yields none, so a scoped CRL will not cover the
// certificate: fail closed.
func crlDistributionPoints(cert *x509.Certificate) [][]byte {
	var out [][]byte
	for _, ext := range cert.Extensions {
		if !ext.Id.Equal(oidExtCRLDistributionPoints) {
			continue
		}
		in := cryptobyte.String(ext.Value)
		var seq cryptobyte.String
		if !in.ReadASN1(&seq, cbasn1.SEQUENCE) {
			return nil
		}
		for !seq.Empty() {
			var dp cryptobyte.String
			if !seq.ReadASN1(&dp, cbasn1.SEQUENCE) {
				return nil
			}
			var dpn cryptobyte.String
			var present bool
			if !dp.ReadOptionalASN1(&dpn, &present, cbasn1.Tag(0).Constructed().ContextSpecific()) {
				return nil
			}
			if !present {
				continue
			}
			var name cryptobyte.String
			var tag cbasn1.Tag
			if !dpn.ReadAnyASN1Element(&name, &tag) {
				return nil
			}
			out = append(out, []byte(name))
		}
	}
	return out
}

func readFileLimited(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return readLimited(f, max)
}

func readLimited(r io.Reader, max int64) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > max {
		return nil, fmt.Errorf("larger than %d bytes", max)
	}
	return data, nil
}

func checkHTTPURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return err
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%q: not an absolute http(s) URL", s)
	}
	return nil
}

// validReason reports whether r is a code RFC 5280 defines (7 is unused).
func validReason(r int) bool {
	return r >= 0 && r <= 10 && r != 7
}
