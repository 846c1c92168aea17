package policies

import (
	"testing"
	"time"
)

func TestLimiter(t *testing.T) {
	l := Rate{Every: time.Minute, Burst: 3}.Limiter()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	steps := []struct {
		key  string
		at   time.Duration
		ok   bool
		wait time.Duration
	}{
		{"a", 0, true, 0},
		{"a", 0, true, 0},
		{"a", 0, true, 0},
		{"a", 0, false, time.Minute}, // burst spent
		{"b", 0, true, 0},            // another key has its own bucket
		{"a", 30 * time.Second, false, 30 * time.Second},
		{"a", time.Minute, true, 0}, // one token back
		{"a", time.Minute, false, time.Minute},
		{"a", 10 * time.Minute, true, 0}, // refilled, but only to the burst
		{"a", 10 * time.Minute, true, 0},
		{"a", 10 * time.Minute, true, 0},
		{"a", 10 * time.Minute, false, time.Minute},
		{"a", 9 * time.Minute, false, time.Minute + time.Minute}, // clock went back: no refill
	}
	for i, s := range steps {
		ok, wait := l.Allow(s.key, t0.Add(s.at))
		if ok != s.ok || wait != s.wait {
			t.Errorf("step %d (%s at %s): %v, wait %s; want %v, wait %s", i, s.key, s.at, ok, wait, s.ok, s.wait)
		}
	}
	if n := l.Forget(t0.Add(10 * time.Minute)); n != 1 {
		t.Errorf("Forget at 10m left %d keys, want 1 (a is empty, b is full again)", n)
	}
	if n := l.Forget(t0.Add(time.Hour)); n != 0 {
		t.Errorf("Forget after an hour left %d keys, want 0", n)
	}
	if ok, _ := l.Allow("a", t0.Add(time.Hour)); !ok {
		t.Error("a forgotten key does not get a full bucket")
	}
}

// TestLimiterReturn: a token given back is there for the next request, and never
// more than the burst.
func TestLimiterReturn(t *testing.T) {
	l := Rate{Every: time.Hour, Burst: 2}.Limiter()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range 2 {
		if ok, _ := l.Allow("k", t0); !ok {
			t.Fatalf("request %d refused", i+1)
		}
	}
	if ok, _ := l.Allow("k", t0); ok {
		t.Fatal("a third request within the burst")
	}
	l.Return("k", t0)
	if ok, _ := l.Allow("k", t0); !ok {
		t.Fatal("the returned token is not there")
	}
	l.Return("k", t0)
	l.Return("k", t0)
	l.Return("k", t0)
	for i := range 2 {
		if ok, _ := l.Allow("k", t0); !ok {
			t.Fatalf("after returns: request %d refused", i+1)
		}
	}
	if ok, _ := l.Allow("k", t0); ok {
		t.Fatal("returns filled the bucket above its burst")
	}
}
