package enroll

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/inkan-pki/inkan/policies"
)

// ProfilePolicy is the Policy of the policy engine: it decides with a policies.Set
// (the profiles' contents, accepted JPKI policies, revocation evidence, key types),
// passes the profile's per-person cap on (Decision.MaxPerPerson), and applies the
// profile's rate limits per person and per client address with one
// policies.Limiter each per profile, in this node's memory. It also decides
// re-binding (Rebind). Safe for concurrent use; Use swaps the profiles when a new
// policy version becomes active.
type ProfilePolicy struct {
	mu     sync.Mutex
	set    *policies.Set
	limits map[string]*profileLimits
	calls  int
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

// Decide implements Policy. Refusals match ErrPolicyDenied or ErrKeyTypeNotAllowed.
// It takes no rate-limit token: Admit does, once every other check has passed,
// so a person at the cap is told so rather than to wait, and a refused request
// costs nothing.
func (p *ProfilePolicy) Decide(_ context.Context, req PolicyRequest) (Decision, error) {
	set := p.Profiles()
	if set == nil {
		return Decision{}, fmt.Errorf("%w: no active profiles yet", ErrUnavailable)
	}
	if req.CSR == nil {
		return Decision{}, errors.New("enroll: profile policy: no CSR")
	}
	if len(req.Person) == 0 {
		return Decision{}, errors.New("enroll: profile policy: the request names no person record")
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
		return Decision{}, fromPolicies(err)
	}
	return decisionOf(pd), nil
}

// Admit implements Admitter: it takes a token from the decided profile's
// buckets for the client network and the person (ErrRateLimited, with the wait
// until a token is back, if one is empty; then it took none), and returns how to
// give them back.
func (p *ProfilePolicy) Admit(_ context.Context, d Decision, req PolicyRequest) (func(), error) {
	set := p.Profiles()
	if set == nil {
		return nil, fmt.Errorf("%w: no active profiles yet", ErrUnavailable)
	}
	prof, ok := set.Profile(d.Profile)
	if !ok {
		return nil, fmt.Errorf("enroll: profile policy: profile %s decided but not in the set", d.Profile)
	}
	return p.limit(prof, req.LimitKey, req.Client, req.At)
}

func decisionOf(pd policies.Decision) Decision {
	return Decision{
		Profile:       pd.Profile,
		PolicyVersion: pd.PolicyVersion,
		Template:      pd.Template,
		NotAfter:      pd.NotAfter,
		SkipLints:     pd.SkipLints,
		MaxPerPerson:  pd.MaxPerPerson,
	}
}

// fromPolicies maps the policy engine's refusals to the API's sentinels, keeping
// their words (which hold no personal data) as the detail.
func fromPolicies(err error) error {
	for _, m := range []struct{ from, to error }{
		{policies.ErrKeyType, ErrKeyTypeNotAllowed},
		{policies.ErrDenied, ErrPolicyDenied},
	} {
		if errors.Is(err, m.from) {
			return fmt.Errorf("%w: %s", m.to, strings.TrimPrefix(err.Error(), m.from.Error()+": "))
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
		l = &profileLimits{rates: r, person: policies.NewLimiter(r.PerPerson), client: policies.NewLimiter(r.PerClient)}
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
			return nil, &retryError{fmt.Errorf("%w: profile %s allows %d enrolments per client address, one more every %s",
				ErrRateLimited, prof.Name, l.rates.PerClient.Burst, l.rates.PerClient.Every), wait}
		}
	}
	if ok, wait := l.person.Allow(person, now); !ok {
		if client != "" {
			l.client.Return(client, now)
		}
		return nil, &retryError{fmt.Errorf("%w: profile %s allows %d enrolments per person, one more every %s",
			ErrRateLimited, prof.Name, l.rates.PerPerson.Burst, l.rates.PerPerson.Every), wait}
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
