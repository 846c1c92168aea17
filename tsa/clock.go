package tsa

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/inkan-pki/inkan/cluster"
)

// The node's clock against the leader's. A token's genTime comes from the
// node's own clock; the node compares it with the leader's about once a second
// over the cluster RPC (the leader call callTime), NTP-style: it notes its
// clock before (t0) and after (t2) the call, and the leader answers its own
// clock (t1). The offset is t1 - (t0+t2)/2, known to within half the round
// trip; the node issues tokens only while |offset| + round trip/2 is within
// the stated accuracy, and only while its last comparison is recent. The
// leader's clock is the reference: each node should follow UTC by NTP, and the
// comparison catches one that does not.
const (
	callTime      = "tsa.time"
	clockInterval = time.Second
	// clockMaxAge is how long a comparison stands: a node that cannot reach
	// the leader for longer stops issuing tokens.
	clockMaxAge = 5 * time.Second
	callTimeout = 2 * time.Second
)

// clockCheck keeps the last comparison of the node's clock with the leader's.
type clockCheck struct {
	now      func() time.Time // the node's clock (genTime)
	accuracy time.Duration

	mu       sync.Mutex
	measured time.Time     // when (monotonic, time.Now) the last comparison ended
	offset   time.Duration // leader - node
	bound    time.Duration // |offset| + round trip/2
	err      error         // why the last comparison failed, if it did
}

// serveTime is the leader's side: its clock, Unix nanoseconds.
func (c *clockCheck) serveTime(context.Context, struct{}) (int64, error) {
	return c.now().UnixNano(), nil
}

// measure compares the node's clock with the leader's once.
func (c *clockCheck) measure(ctx context.Context, cl *cluster.Cluster) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	t0 := c.now()
	ns, err := cluster.Call[int64](ctx, cl, callTime, struct{}{})
	t2 := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		c.err = err
		return
	}
	t1 := time.Unix(0, ns)
	rtt := t2.Sub(t0)
	c.offset = t1.Sub(t0.Add(rtt / 2))
	c.bound = c.offset.Abs() + rtt/2
	c.measured, c.err = time.Now(), nil
}

// errNoComparison: the node has not compared its clock with the leader's yet.
var errNoComparison = errors.New("no comparison yet")

// check says whether the node may issue a token now: nil, or a Failure with
// TimeNotAvailable saying why not.
func (c *clockCheck) check() *failure {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch age := time.Since(c.measured); {
	case c.measured.IsZero():
		err := c.err
		if err == nil {
			err = errNoComparison
		}
		return failf(timeNotAvailable, "this node has not compared its clock with the leader's: %v", err)
	case age > clockMaxAge:
		return failf(timeNotAvailable, "this node last compared its clock with the leader's %s ago (%v)", age.Round(time.Millisecond), c.err)
	case c.bound > c.accuracy:
		return failf(timeNotAvailable, "this node's clock is %s off the leader's (±%s), more than the accuracy of %s",
			c.offset.Round(time.Microsecond), (c.bound - c.offset.Abs()).Round(time.Microsecond), c.accuracy)
	}
	return nil
}

// last returns the last offset measured, and whether there is one.
func (c *clockCheck) last() (time.Duration, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.offset, !c.measured.IsZero()
}
