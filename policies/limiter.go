package policies

import (
	"math"
	"time"
)

// Limiter is a set of token buckets by key (a person hash, a client address): one
// token every Rate.Every, at most Rate.Burst held, a full bucket for a new key. It is
// a pure counter: the caller passes the time, so tests use a fake clock, and it
// does no locking (a node wraps it in a mutex). Keys whose buckets have refilled
// are forgotten by Forget, since they hold nothing a new bucket would not.
type Limiter struct {
	rate    Rate
	buckets map[string]bucket
}

type bucket struct {
	tokens float64
	at     time.Time
}

// Limiter returns an empty limiter for the rate (as Parse checked it: both
// fields positive).
func (rate Rate) Limiter() *Limiter {
	return &Limiter{rate: rate, buckets: map[string]bucket{}}
}

// Allow takes a token from key's bucket at now and reports whether there was one.
// When there was not, wait is how long until one will be.
func (l *Limiter) Allow(key string, now time.Time) (ok bool, wait time.Duration) {
	b := l.refill(key, now)
	if b.tokens >= 1 {
		b.tokens--
		l.buckets[key] = b
		return true, 0
	}
	l.buckets[key] = b
	need := time.Duration(math.Ceil((1 - b.tokens) * float64(l.rate.Every)))
	if ahead := b.at.Sub(now); ahead > 0 { // the clock stepped back: refill starts at b.at
		need += ahead
	}
	return false, need
}

// Return gives back a token Allow took at now, for a request refused after it
// took it: a refusal costs the key nothing. The bucket holds at most Rate.Burst.
func (l *Limiter) Return(key string, now time.Time) {
	b := l.refill(key, now)
	b.tokens = math.Min(float64(l.rate.Burst), b.tokens+1)
	l.buckets[key] = b
}

func (l *Limiter) refill(key string, now time.Time) bucket {
	burst := float64(l.rate.Burst)
	b, ok := l.buckets[key]
	if !ok {
		return bucket{tokens: burst, at: now}
	}
	if el := now.Sub(b.at); el > 0 {
		b.tokens = math.Min(burst, b.tokens+float64(el)/float64(l.rate.Every))
		b.at = now
	}
	return b
}

// Forget drops the buckets that are full again at now, and reports how many keys
// remain.
func (l *Limiter) Forget(now time.Time) int {
	for k := range l.buckets {
		if l.refill(k, now).tokens >= float64(l.rate.Burst) {
			delete(l.buckets, k)
		}
	}
	return len(l.buckets)
}
