package enroll

import (
	"crypto/x509"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/inkan-pki/inkan/jpki"
	"github.com/inkan-pki/inkan/policies"
)

// ProfilePolicy is the enrollment API's side of the policy engine: it asks a
// policies.Set for the Decision of an enrolment (Set.Decide) or a re-bind
// (Set.DecideRebind), says the engine's refusals as the API's problems, and applies
// the profile's rate limits per person and per client address with one
// policies.Limiter each per profile, in this node's memory. Safe for concurrent
// use; Use swaps the profiles when a new policy version becomes active.
type ProfilePolicy struct {
	mu     sync.Mutex
	set    *policies.Set
	limits map[string]*profileLimits
	calls  int
}

// policyRequest is a verified enrolment for the policy: what policies.Request
// holds, with the subscriber's CSR, and the keys of the rate limits: LimitKey,
// the person record's, and Client, the network the request came from
// (ClientPrefix).
type policyRequest struct {
	// Profile is the profile the client asked for ("" for the set's default).
	Profile string
	// JPKI is the verified signature certificate; its Identity is personal data, to
	// be read only for what the policy puts into the certificate, and never logged.
	JPKI *jpki.SignatureCertificate
	// CSR is the subscriber's request; its signature has been checked.
	CSR *x509.CertificateRequest
	// Revocation is the JPKI revocation answer the verification used (State is
	// jpki.StateGood), and RevocationSource the kind of source that gave it
	// (jpki.RevocationCRL, jpki.RevocationOCSP, or jpki.RevocationNone in tests).
	Revocation       jpki.Status
	RevocationSource string
	// Person is the identifier of the person record the enrolment is for (a new
	// one if the JPKI certificate belongs to none yet): what the pseudonyms are
	// keyed hashes of.
	Person   []byte
	LimitKey string
	Client   string
	// At is the time of the decision.
	At time.Time
}

// profileLimits are one profile's token buckets, for the rates they were made with.
type profileLimits struct {
	rates          policies.RateLimits
	person, client *policies.Limiter
}

// forgetEvery is how many rate-limit checks pass between sweeps of the buckets that
// have refilled, which bounds the memory the limiters keep.
const forgetEvery = 4096

// NewProfilePolicy returns the policy deciding with set. set may be nil until the
// first Use (a node that follows the replicated store, ca/policy): meanwhile every
// enrolment is refused as unavailable.
func NewProfilePolicy(set *policies.Set) *ProfilePolicy {
	return &ProfilePolicy{set: set, limits: map[string]*profileLimits{}}
}

// Use makes set the profiles decided with from now on. A profile keeps its buckets
// while its rate limits stay the same.
func (p *ProfilePolicy) Use(set *policies.Set) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.set = set
}

// Profiles returns the profiles in use.
func (p *ProfilePolicy) Profiles() *policies.Set {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.set
}

// decide has the profiles decide an enrolment, called only after the proof, the
// CSR and the JPKI certificate (chain, validity, key usage, policy, revocation)
// have been verified. Refusals match errPolicyDenied or errKeyTypeNotAllowed,
// with the engine's words (no personal data) as the detail. It takes no
// rate-limit token: admit does, once every other check has passed, so a person
// at the cap is told so rather than to wait, and a refused request costs nothing.
func (p *ProfilePolicy) decide(req policyRequest) (policies.Decision, error) {
	set := p.Profiles()
	if set == nil {
		return policies.Decision{}, refuse(errUnavailable, "no active profiles yet")
	}
	if req.CSR == nil {
		return policies.Decision{}, errors.New("enroll: profile policy: no CSR")
	}
	if len(req.Person) == 0 {
		return policies.Decision{}, errors.New("enroll: profile policy: the request names no person record")
	}
	pd, err := set.Decide(policies.Request{
		Profile:          req.Profile,
		JPKI:             req.JPKI,
		Person:           req.Person,
		PublicKey:        req.CSR.PublicKey,
		Revocation:       req.Revocation,
		RevocationSource: req.RevocationSource,
		At:               req.At,
	})
	if err != nil {
		return policies.Decision{}, fromPolicies(err)
	}
	return pd, nil
}

// rebind has the profiles decide a re-bind (policies.Set.DecideRebind), once both
// halves are verified and the certificate is policies.Derived.Rebindable; refusals as
// decide's. It takes no rate-limit token: the handler calls admit last, as for an
// enrolment.
func (p *ProfilePolicy) rebind(req policies.RebindRequest) (policies.RebindDecision, error) {
	set := p.Profiles()
	if set == nil {
		return policies.RebindDecision{}, refuse(errUnavailable, "no active profiles yet")
	}
	d, err := set.DecideRebind(req)
	if err != nil {
		return policies.RebindDecision{}, fromPolicies(err)
	}
	return d, nil
}

// admit takes a token from the buckets of the profile decided for the client
// network and the person (errRateLimited, with the wait until a token is back, if
// one is empty; then it took none), and returns how to give them back: the
// handler does when the issuance is refused or fails after all (a nonce used
// meanwhile, the cap reached at the leader), so that a refusal costs the person
// and the address nothing.
func (p *ProfilePolicy) admit(profile string, req policyRequest) (func(), error) {
	set := p.Profiles()
	if set == nil {
		return nil, refuse(errUnavailable, "no active profiles yet")
	}
	prof, ok := set.Profile(profile)
	if !ok {
		return nil, fmt.Errorf("enroll: profile policy: profile %s decided but not in the set", profile)
	}
	return p.limit(prof, req.LimitKey, req.Client, req.At)
}

// fromPolicies maps the policy engine's refusals to the API's sentinels, keeping
// their words (which hold no personal data) as the detail; an operator's hold and
// a certificate bound to the new card already are problems of their own.
func fromPolicies(err error) error {
	switch {
	case errors.Is(err, policies.ErrRebindHeldByOperator):
		return errRebindHeldByOperator
	case errors.Is(err, policies.ErrRebindBound):
		return errRebindSameJPKICert
	}
	for _, m := range []struct{ from, to error }{
		{policies.ErrRebindNotPossible, errRebindNotPossible},
		{policies.ErrKeyType, errKeyTypeNotAllowed},
		{policies.ErrDenied, errPolicyDenied},
	} {
		if errors.Is(err, m.from) {
			reason, ok := policies.Reason(err)
			if !ok {
				reason = err.Error()
			}
			return refuse(m.to, "%s", reason)
		}
	}
	return fmt.Errorf("enroll: profile policy: %w", err)
}

// limit takes a token from the profile's bucket for the client network and from the
// one for the person (their limit key), both or neither, and returns how to give
// them back. The person is named in no message.
func (p *ProfilePolicy) limit(prof *policies.Profile, person, client string, now time.Time) (func(), error) {
	if person == "" {
		return nil, errors.New("enroll: profile policy: no person limit key")
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	l := p.limits[prof.Name]
	if l == nil || l.rates != prof.Enrollment.RateLimits {
		r := prof.Enrollment.RateLimits
		l = &profileLimits{rates: r, person: r.PerPerson.Limiter(), client: r.PerClient.Limiter()}
		p.limits[prof.Name] = l
	}
	if p.calls++; p.calls%forgetEvery == 0 {
		for _, l := range p.limits {
			l.person.Forget(now)
			l.client.Forget(now)
		}
	}
	if client != "" {
		if ok, wait := l.client.Allow(client, now); !ok {
			return nil, &retryError{refuse(errRateLimited, "profile %s allows %d enrolments per client address, one more every %s", prof.Name, l.rates.PerClient.Burst, l.rates.PerClient.Every), wait}
		}
	}
	if ok, wait := l.person.Allow(person, now); !ok {
		if client != "" {
			l.client.Return(client, now)
		}
		return nil, &retryError{refuse(errRateLimited, "profile %s allows %d enrolments per person, one more every %s", prof.Name, l.rates.PerPerson.Burst, l.rates.PerPerson.Every), wait}
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			p.mu.Lock()
			defer p.mu.Unlock()
			if client != "" {
				l.client.Return(client, now)
			}
			l.person.Return(person, now)
		})
	}, nil
}

// retryError is a refusal the client may try again after wait (Retry-After).
type retryError struct {
	err  error
	wait time.Duration
}

func (e *retryError) Error() string { return e.err.Error() }
func (e *retryError) Unwrap() error { return e.err }
