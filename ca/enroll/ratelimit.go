package enroll

import (
	"sync"
	"time"
)

// rateLimit is a token bucket per client address: Rate requests per second on
// average, Burst at once.
type rateLimit struct {
	Rate  float64
	Burst int
}

// defaultRateLimit is generous for a person enrolling and tight for a script: a
// challenge and an enrollment take two requests.
var defaultRateLimit = rateLimit{Rate: 1, Burst: 10}

// maxClients bounds the addresses the limiter remembers; past it, buckets that have
// refilled are forgotten (they hold nothing a fresh bucket would not).
const maxClients = 1 << 16

// limiter keeps one token bucket per client address. It is node-local: a client that
// spreads requests over n nodes gets n times the rate, which is still bounded.
type limiter struct {
	rate    float64
	burst   float64
	off     bool
	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	tokens float64
	at     time.Time
}

func newLimiter(rl rateLimit) *limiter {
	if rl == (rateLimit{}) {
		rl = defaultRateLimit
	}
	if rl.Burst < 1 {
		rl.Burst = 1
	}
	return &limiter{rate: rl.Rate, burst: float64(rl.Burst), off: rl.Rate < 0, buckets: map[string]*bucket{}}
}

func (l *limiter) allow(addr string, now time.Time) bool {
	if l.off {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[addr]
	if b == nil {
		if len(l.buckets) >= maxClients {
			l.sweep(now)
		}
		b = &bucket{tokens: l.burst, at: now}
		l.buckets[addr] = b
	}
	if dt := now.Sub(b.at).Seconds(); dt > 0 {
		b.tokens = min(l.burst, b.tokens+dt*l.rate)
	}
	b.at = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// sweep forgets full buckets; if none is full, the map is cleared (a flood of
// addresses, each of which then starts over with a full bucket).
func (l *limiter) sweep(now time.Time) {
	for a, b := range l.buckets {
		if b.tokens+now.Sub(b.at).Seconds()*l.rate >= l.burst {
			delete(l.buckets, a)
		}
	}
	if len(l.buckets) >= maxClients {
		clear(l.buckets)
	}
}
