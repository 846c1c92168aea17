package ocsp

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// issuer is a CA certificate whose certificates this node answers for, with the
// delegated responder certificate that CA issued to this node's responder key.
type issuer struct {
	ID        string
	Cert      *x509.Certificate
	Responder *x509.Certificate
}

// source is the CA's state as the pre-signer reads it (Follow reads ca's own).
type source interface {
	// Issuers lists every CA certificate the cluster has, active or rolled over.
	Issuers(ctx context.Context) ([]issuer, error)
	// Statuses calls fn for every certificate of the issuer, with its status.
	Statuses(ctx context.Context, issuerID string, fn func(certStatus) error) error
	// Status returns one certificate's status; false if the serial is not the issuer's.
	Status(ctx context.Context, issuerID string, serial []byte) (certStatus, bool, error)
}

// change tells the pre-signer that the statuses of some certificates changed.
type change struct {
	IssuerID string
	Serials  [][]byte
	// Resync means changes were missed (or the issuers changed): walk everything.
	Resync bool
}

// presignerConfig tunes a Presigner. Zero values take the defaults in parentheses.
type presignerConfig struct {
	// Key is this node's responder key, in its own HSM; Source's Issuer.Responder
	// certifies it.
	Key crypto.Signer
	// Validity is nextUpdate - thisUpdate (4 days); RefreshAfter is the age at which a
	// response is signed again (2 days), spread by up to a quarter with jitter.
	Validity     time.Duration
	RefreshAfter time.Duration
	// Rate caps refresh signatures per second, to leave the HSM room for issuance
	// (0: no cap). Status changes are signed at once, outside the cap.
	Rate float64
	// Workers is how many responses are made at once (8). Twice the HSM's
	// sessions keeps every session signing while other workers encode, cache
	// and queue what they signed.
	Workers int
	// Retention sets the archive cutoff to producedAt - Retention (10 years).
	Retention time.Duration
	// ScanInterval is how often the cache is scanned for responses due (30s).
	ScanInterval time.Duration
	// StorePath is the node-local bbolt file of signed responses.
	StorePath  string
	Now        func() time.Time
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// presigner keeps a node's Cache signed: every certificate of every issuer has a
// response per CertID hash that states its current status and is not due for
// refresh. It signs when a status changes, re-signs before nextUpdate at a capped
// rate, and persists what it signs so a restart re-signs nothing it already had.
type presigner struct {
	cache *cache
	src   source
	store *store
	cfg   presignerConfig
	log   *slog.Logger

	mu       sync.Mutex
	builders map[string]*issuerSigning

	limiter *limiter
	metrics presignerMetrics
	health  struct {
		sync.Mutex
		h Health
	}
	persist chan storedSerial // to the store writer, which batches transactions

	// reconciling counts the reconciles under way (walking the state, or
	// syncing the issuers before one), and unsettled the jobs they queued that
	// no worker has finished yet: until both are 0 the cache may lack what the
	// state holds (a CA whose responder certificate just arrived).
	reconciling, unsettled atomic.Int64

	// serials serialises the signing of one certificate's responses (striped
	// by serial): two jobs for one serial, a status change and a refresh or
	// two quick changes, must not interleave their CertID variants.
	serials [64]sync.Mutex
}

type issuerSigning struct {
	issuer  issuer
	builder *builder
}

type presignerMetrics struct {
	signed        *prometheus.CounterVec
	backlog       prometheus.Gauge
	oldest        prometheus.Gauge
	signErrors    prometheus.Counter
	installed     prometheus.Counter
	stale         prometheus.Gauge
	cacheResponse prometheus.GaugeFunc
}

// Health is how current a node's cache is, as of the pre-signer's last scan of
// it (every ScanInterval).
type Health struct {
	// Reconciled: since the start, the cache has been compared with the whole
	// state once and what was missing or out of date was signed, and no later
	// reconcile (a CA's responder certificate arrived, changes were missed)
	// is under way or has responses left to sign. It is current, not as of
	// the last scan.
	Reconciled bool
	// Scanned is when the last scan ended (zero before the first).
	Scanned   time.Time
	Responses int
	// Stale counts the responses past their nextUpdate among those of
	// issuers this node signs for (it has a valid responder certificate from
	// them): the refresher has fallen behind. Unsignable counts them among
	// the issuers it cannot sign for (no responder certificate, the CA key
	// destroyed). The responder answers tryLater for both.
	Stale, Unsignable int
	// Signs lists the issuers this node signs for now (a responder
	// certificate from them, not expired), sorted. It is current.
	Signs []string
}

// Health returns the cache's health as of the last scan.
func (p *presigner) Health() Health {
	p.health.Lock()
	h := p.health.h
	p.health.Unlock()
	h.Reconciled = h.Reconciled && p.reconciling.Load() == 0 && p.unsettled.Load() == 0
	now := p.cfg.Now()
	h.Signs = nil
	p.mu.Lock()
	for id, is := range p.builders {
		if now.Before(is.issuer.Responder.NotAfter) {
			h.Signs = append(h.Signs, id)
		}
	}
	p.mu.Unlock()
	slices.Sort(h.Signs)
	return h
}

// newPresigner opens the response store and loads it into cache; call Run to keep
// the cache signed. The cache starts serving what the store held at once.
func newPresigner(ctx context.Context, cache *cache, src source, cfg presignerConfig) (*presigner, error) {
	if cfg.Key == nil {
		return nil, errors.New("ocsp: presigner needs the responder key")
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&cfg.Validity, 4*24*time.Hour)
	def(&cfg.RefreshAfter, 2*24*time.Hour)
	def(&cfg.Retention, 10*365*24*time.Hour)
	def(&cfg.ScanInterval, 30*time.Second)
	if cfg.Workers == 0 {
		cfg.Workers = 8
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.RefreshAfter >= cfg.Validity {
		return nil, fmt.Errorf("ocsp: refresh after %s must be shorter than validity %s", cfg.RefreshAfter, cfg.Validity)
	}
	p := &presigner{cache: cache, src: src, cfg: cfg, log: cfg.Logger, builders: map[string]*issuerSigning{}, limiter: newLimiter(cfg.Rate, cfg.Now)}
	p.metrics = presignerMetrics{
		signed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "inkan_ocsp_signed_total", Help: "OCSP responses signed, by why.",
		}, []string{"why"}),
		backlog: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "inkan_ocsp_refresh_backlog", Help: "Responses due for re-signing at the last scan.",
		}),
		oldest: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "inkan_ocsp_oldest_response_age_seconds", Help: "Age of the oldest cached response at the last scan.",
		}),
		signErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "inkan_ocsp_sign_errors_total", Help: "OCSP responses that could not be signed.",
		}),
		stale: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "inkan_ocsp_stale_responses", Help: "Cached responses past their nextUpdate at the last scan (answered tryLater).",
		}),
		installed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "inkan_ocsp_first_responses_installed_total", Help: "Responses the leader signed for a new certificate or a status change, installed from its Raft entry.",
		}),
		cacheResponse: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "inkan_ocsp_cached_responses", Help: "Signed responses held (one per serial and CertID hash).",
		}, func() float64 { return float64(cache.Len()) }),
	}
	if cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{p.metrics.signed, p.metrics.backlog, p.metrics.oldest, p.metrics.signErrors, p.metrics.installed, p.metrics.stale, p.metrics.cacheResponse} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("ocsp: metrics: %w", err)
			}
		}
	}
	if err := p.syncIssuers(ctx); err != nil {
		return nil, err
	}
	if cfg.StorePath != "" {
		s, err := openStore(cfg.StorePath, p.log)
		if err != nil {
			return nil, err
		}
		p.store = s
		// Room for a few seconds of signing, so that workers do not wait
		// for the writer's fsync: signing and the disk overlap. The channel
		// outlives a Run (Install may send while none runs): never closed.
		p.persist = make(chan storedSerial, persistQueue)
		n, err := s.load(cache)
		if err != nil {
			_ = s.close()
			return nil, err
		}
		p.log.Info("ocsp: responses loaded", "count", n, "path", cfg.StorePath)
	}
	return p, nil
}

// Close closes the response store.
func (p *presigner) Close() error {
	if p.store == nil {
		return nil
	}
	return p.store.close()
}

// syncIssuers makes the cache and the builders match the Source's issuers, and
// reports whether any responder certificate changed.
func (p *presigner) syncIssuers(ctx context.Context) error {
	issuers, err := p.src.Issuers(ctx)
	if err != nil {
		return fmt.Errorf("ocsp: list issuers: %w", err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, is := range issuers {
		if cur, ok := p.builders[is.ID]; ok && sameCert(cur.issuer.Responder, is.Responder) {
			continue
		}
		if is.Responder == nil {
			return fmt.Errorf("ocsp: issuer %s has no responder certificate for this node", is.ID)
		}
		b, err := newBuilder(is.Cert, is.Responder, p.cfg.Key, p.cfg.Retention)
		if err != nil {
			return fmt.Errorf("ocsp: issuer %s: %w", is.ID, err)
		}
		if err := p.cache.AddIssuer(is.ID, is.Cert); err != nil {
			return err
		}
		p.builders[is.ID] = &issuerSigning{issuer: is, builder: b}
	}
	return nil
}

func sameCert(a, b *x509.Certificate) bool {
	return a != nil && b != nil && a.Equal(b)
}

func (p *presigner) signing(issuerID string) *issuerSigning {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.builders[issuerID]
}

// job is one certificate to sign.
type job struct {
	issuerID string
	st       certStatus
	why      string
}

// Run keeps the cache signed until ctx ends: it reconciles the cache with the
// state, signs what changes arrive on changes at once, and re-signs what comes due.
func (p *presigner) Run(ctx context.Context, changes <-chan change) error {
	urgent := make(chan job, 1024)
	refresh := make(chan job, 1024)
	p.unsettled.Store(0) // a Run before this one left its queued jobs behind
	var wg sync.WaitGroup
	if p.store != nil {
		stop, writerDone := make(chan struct{}), make(chan struct{})
		go func() {
			defer close(writerDone)
			p.writeStore(stop)
		}()
		defer func() { close(stop); <-writerDone }()
	}
	for range p.cfg.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.work(ctx, urgent, refresh)
		}()
	}
	defer wg.Wait()

	if err := p.reconcile(ctx, urgent, ""); err != nil {
		if ctx.Err() == nil {
			p.log.Error("ocsp: reconcile", "err", err)
		}
	} else {
		p.health.Lock()
		p.health.h.Reconciled = true
		p.health.Unlock()
	}
	scan := time.NewTicker(p.cfg.ScanInterval)
	defer scan.Stop()
	// A scan's jobs are fed from a goroutine of their own, so that status changes are
	// taken while a large refresh is under way; one scan at a time. The first
	// runs at once: it tells Health how fresh the loaded responses are.
	scanning := make(chan struct{}, 1)
	defer func() { scanning <- struct{}{} }() // wait for a feed in progress
	scanning <- struct{}{}
	go func() {
		defer func() { <-scanning }()
		p.scan(ctx, refresh)
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ch, ok := <-changes:
			if !ok {
				changes = nil
				continue
			}
			if err := p.onChange(ctx, ch, urgent); err != nil && ctx.Err() == nil {
				p.log.Error("ocsp: apply status change", "err", err)
			}
		case <-scan.C:
			select {
			case scanning <- struct{}{}:
				go func() {
					defer func() { <-scanning }()
					p.scan(ctx, refresh)
				}()
			default: // the previous scan's jobs are still being fed
			}
		}
	}
}

func (p *presigner) onChange(ctx context.Context, ch change, urgent chan<- job) error {
	if ch.Resync {
		p.reconciling.Add(1)
		defer p.reconciling.Add(-1)
		if err := p.syncIssuers(ctx); err != nil {
			return err
		}
		return p.reconcile(ctx, urgent, "")
	}
	if p.signing(ch.IssuerID) == nil { // a new CA certificate, or its responder certificate
		p.reconciling.Add(1)
		defer p.reconciling.Add(-1)
		if err := p.syncIssuers(ctx); err != nil {
			return err
		}
		if p.signing(ch.IssuerID) == nil {
			// The Source does not list it yet (this node has no responder
			// certificate from it): its certificates are all signed by the
			// reconcile below, once a change brings the responder
			// certificate in (its own issuance is such a change).
			return nil
		}
		// Taken in now: the changes dropped while it could not sign for
		// the issuer (above) and the first responses it could not install
		// are signed by a reconcile of the issuer's certificates, which
		// covers this change's serials too.
		return p.reconcile(ctx, urgent, ch.IssuerID)
	}
	for _, serial := range ch.Serials {
		st, ok, err := p.src.Status(ctx, ch.IssuerID, serial)
		if err != nil {
			return err
		}
		if !ok || p.current(ch.IssuerID, st, p.cfg.Now()) {
			continue // gone, or served already (the leader's first responses)
		}
		select {
		case urgent <- job{issuerID: ch.IssuerID, st: st, why: "change"}:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// reconcile walks every certificate in the state (of only issuerID, if not
// empty) and signs those whose cached responses are missing, state another
// status, or are due.
func (p *presigner) reconcile(ctx context.Context, out chan<- job, issuerID string) error {
	p.reconciling.Add(1)
	defer p.reconciling.Add(-1)
	issuers, err := p.src.Issuers(ctx)
	if err != nil {
		return err
	}
	now := p.cfg.Now()
	for _, is := range issuers {
		if issuerID != "" && is.ID != issuerID {
			continue
		}
		err := p.src.Statuses(ctx, is.ID, func(st certStatus) error {
			if p.current(is.ID, st, now) {
				return nil
			}
			p.unsettled.Add(1)
			select {
			case out <- job{issuerID: is.ID, st: st, why: "reconcile"}:
				return nil
			case <-ctx.Done():
				p.unsettled.Add(-1)
				return ctx.Err()
			}
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// current reports whether every CertID variant of st is cached, says st and is not due.
func (p *presigner) current(issuerID string, st certStatus, now time.Time) bool {
	for _, h := range certIDHashes {
		r := p.cache.Get(issuerID, h, st.Serial)
		if r == nil || !r.says(st) || p.due(r, st.Serial, now) {
			return false
		}
	}
	return true
}

// due reports whether r should be signed again: once it has lived RefreshAfter's
// share of its validity, less a jitter of up to a quarter fixed by the serial, so
// responses signed together do not all come due together.
func (p *presigner) due(r *response, serial []byte, now time.Time) bool {
	life := r.NextUpdate.Sub(r.ThisUpdate)
	share := float64(p.cfg.RefreshAfter) / float64(p.cfg.Validity)
	h := fnv.New32a()
	h.Write(serial)
	jitter := float64(h.Sum32()%1000) / 4000 // [0, 0.25)
	refreshAt := r.ThisUpdate.Add(time.Duration(float64(life) * share * (1 - jitter)))
	return !now.Before(refreshAt)
}

// scan queues, for re-signing, every cached response that has come due.
func (p *presigner) scan(ctx context.Context, out chan<- job) {
	now := p.cfg.Now()
	var due []job
	oldest := now
	signs := map[string]bool{} // the issuers this node can sign for now
	p.mu.Lock()
	for id, is := range p.builders {
		signs[id] = now.Before(is.issuer.Responder.NotAfter)
	}
	p.mu.Unlock()
	h := Health{Reconciled: true}
	p.cache.Range(func(issuerID string, hash crypto.Hash, serial []byte, r *response) bool {
		if r.ThisUpdate.Before(oldest) {
			oldest = r.ThisUpdate
		}
		h.Responses++
		if !now.Before(r.NextUpdate) {
			if signs[issuerID] {
				h.Stale++
			} else {
				h.Unsignable++
			}
		}
		if hash != certIDHashes[0] {
			return true
		}
		if p.due(r, serial, now) {
			st := certStatus{Serial: serial, Status: r.Status, RevokedAt: r.RevokedAt, Reason: r.Reason}
			due = append(due, job{issuerID: issuerID, st: st, why: "refresh"})
		}
		return true
	})
	h.Scanned = p.cfg.Now()
	p.health.Lock()
	h.Reconciled = p.health.h.Reconciled
	p.health.h = h
	p.health.Unlock()
	p.metrics.stale.Set(float64(h.Stale + h.Unsignable))
	p.metrics.backlog.Set(float64(len(due)))
	p.metrics.oldest.Set(now.Sub(oldest).Seconds())
	// In the store's key order: the writer's batches then touch neighbouring
	// pages of the bbolt file, not one page per response (the cache's map
	// order is random, and a million random updates rewrite the whole file
	// many times over).
	slices.SortFunc(due, func(a, b job) int {
		if c := strings.Compare(a.issuerID, b.issuerID); c != 0 {
			return c
		}
		return bytes.Compare(a.st.Serial, b.st.Serial)
	})
	for _, j := range due {
		select {
		case out <- j:
		case <-ctx.Done():
			return
		}
	}
}

// work signs jobs, status changes first; refresh jobs wait for the rate limiter.
func (p *presigner) work(ctx context.Context, urgent, refresh <-chan job) {
	for {
		var j job
		select {
		case j = <-urgent:
		default:
			select {
			case j = <-urgent:
			case j = <-refresh:
				// A later scan may queue again what an earlier one queued and a
				// worker has signed since: skip it before it costs a token.
				if p.current(j.issuerID, j.st, p.cfg.Now()) {
					continue
				}
				if err := p.limiter.wait(ctx); err != nil {
					return
				}
			case <-ctx.Done():
				return
			}
		}
		if err := p.signLatest(ctx, j); err != nil {
			p.metrics.signErrors.Inc()
			p.log.Error("ocsp: sign response", "issuer", j.issuerID, "serial", fmt.Sprintf("%x", j.st.Serial), "err", err)
		}
		if j.why == "reconcile" {
			p.unsettled.Add(-1)
		}
	}
}

// signLatest signs a job's certificate with the status the Source holds now,
// one job per serial at a time. A job's status was read when it was queued;
// two workers signing one serial with statuses read at different times would
// leave the CertID variants disagreeing (the last write of each wins), and a
// refresh of an old "good" could overwrite a revocation. Under the serial's
// lock the status is read again, so the last signing states the newest status.
//
// The leader's responses installed from an entry (Install, as the node
// applies it) do not take the serial's lock: they must not wait on the HSM. If
// they arrive while this signs, they state a status at least as new as the
// one read here, so what this signed is dropped rather than put over them.
func (p *presigner) signLatest(ctx context.Context, j job) error {
	mu := &p.serials[stripe(j.st.Serial)]
	mu.Lock()
	defer mu.Unlock()
	var before [len(certIDHashes)]*response
	for i, h := range certIDHashes {
		before[i] = p.cache.Get(j.issuerID, h, j.st.Serial)
	}
	st, ok, err := p.src.Status(ctx, j.issuerID, j.st.Serial)
	if err != nil {
		return err
	}
	if !ok {
		return nil // no longer the issuer's: nothing to answer for
	}
	j.st = st
	return p.signUnless(j, &before)
}

func stripe(serial []byte) int {
	h := 0
	for _, b := range serial {
		h = h*31 + int(b)
	}
	return h & 63
}

// signAll signs st under every CertID hash with this node's responder key.
func (p *presigner) signAll(is *issuerSigning, st certStatus) ([len(certIDHashes)]*response, error) {
	var out [len(certIDHashes)]*response
	now := p.cfg.Now().UTC().Truncate(time.Second)
	next := now.Add(p.cfg.Validity)
	if na := is.issuer.Responder.NotAfter; na.Before(next) {
		next = na // a response may not outlive the certificate that vouches for it
	}
	if !next.After(now) {
		return out, fmt.Errorf("responder certificate for %s has expired", is.issuer.ID)
	}
	for i, h := range certIDHashes {
		der, err := is.builder.sign(st, h, now, now, next)
		if err != nil {
			return out, err
		}
		out[i] = newResponse(der, st, now, next)
	}
	return out, nil
}

// sign signs st under every CertID hash, caches the responses and persists them.
func (p *presigner) sign(j job) error { return p.signUnless(j, nil) }

// signUnless is sign, but if before is not nil and the cache no longer holds
// what it held (before, read ahead of the status this signs) once the
// responses are signed, another writer came first: they are dropped.
func (p *presigner) signUnless(j job, before *[len(certIDHashes)]*response) error {
	is := p.signing(j.issuerID)
	if is == nil {
		return fmt.Errorf("unknown issuer %q", j.issuerID)
	}
	resps, err := p.signAll(is, j.st)
	if err != nil {
		return err
	}
	if before != nil {
		for i, h := range certIDHashes {
			if p.cache.Get(j.issuerID, h, j.st.Serial) != before[i] {
				return nil
			}
		}
	}
	stored := storedSerial{issuerID: j.issuerID, serial: j.st.Serial}
	for i, h := range certIDHashes {
		if err := p.cache.Put(j.issuerID, h, j.st.Serial, resps[i]); err != nil {
			return err
		}
		stored.resps[i] = resps[i]
	}
	p.metrics.signed.WithLabelValues(j.why).Add(float64(len(certIDHashes)))
	if p.persist != nil {
		p.persist <- stored
	}
	return nil
}

// Sizes, in serials (each with its responses under every CertID hash), of the
// store writer's queue and of its largest transaction, and how long it gathers
// serials for one transaction.
const (
	persistQueue  = 1 << 15
	persistBatch  = 1 << 13
	persistWindow = 500 * time.Millisecond
)

// writeStore persists signed responses in batches: one bbolt transaction (one
// fsync) for what arrives within persistWindow of the first, up to persistBatch.
// A transaction rewrites every page it touches, and a refresh in key order puts
// a page's responses one after another: many small transactions would write
// the same pages over and over. A crash loses at most the window's responses,
// which the restarted node signs again (reconcile finds them missing or stale).
func (p *presigner) writeStore(stop <-chan struct{}) {
	batch := make([]storedSerial, 0, persistBatch)
	window := time.NewTimer(persistWindow)
	window.Stop()
	stopping := false // once stop is closed, what is queued is written, then the writer ends
	for {
		var r storedSerial
		if stopping {
			select {
			case r = <-p.persist:
			default:
				return
			}
		} else {
			select {
			case r = <-p.persist:
			case <-stop:
				stopping = true
				continue
			}
		}
		batch = append(batch[:0], r)
		window.Reset(persistWindow)
	more:
		for len(batch) < cap(batch) {
			if stopping {
				select {
				case r := <-p.persist:
					batch = append(batch, r)
					continue
				default:
					break more
				}
			}
			select {
			case r := <-p.persist:
				batch = append(batch, r)
			case <-window.C:
				break more
			case <-stop:
				stopping = true
			}
		}
		window.Stop()
		if err := p.store.put(batch); err != nil {
			// The cache still serves them; a restart re-signs what was not stored.
			p.log.Error("ocsp: persist responses", "count", len(batch), "err", err)
		}
		clear(batch) // let the responses go when the cache replaces them
	}
}

// limiter is a token bucket: rate tokens a second, a burst of one second's worth.
type limiter struct {
	mu     sync.Mutex
	rate   float64
	tokens float64
	last   time.Time
	now    func() time.Time
}

func newLimiter(rate float64, now func() time.Time) *limiter {
	return &limiter{rate: rate, tokens: rate, last: now(), now: now}
}

func (l *limiter) wait(ctx context.Context) error {
	if l.rate <= 0 {
		return ctx.Err()
	}
	for {
		l.mu.Lock()
		now := l.now()
		l.tokens = min(l.rate, l.tokens+now.Sub(l.last).Seconds()*l.rate)
		l.last = now
		if l.tokens >= 1 {
			l.tokens--
			l.mu.Unlock()
			return nil
		}
		wait := time.Duration((1 - l.tokens) / l.rate * float64(time.Second))
		l.mu.Unlock()
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
	}
}
