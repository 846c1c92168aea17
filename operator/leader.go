package operator

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/bbolt"

	"github.com/inkan-pki/inkan/cluster"
)

// Executing approved requests, once.
//
// Only the leader executes, and it first commits operator.request.start, which
// moves the request from Approved to Executing under a run ID of its own: Raft
// orders the starts, so of two leaders (an old one that has not noticed, a new
// one) only one starts a request. The runner then runs, and the run's outcome is
// committed with operator.request.finish (refused unless the request is still
// Executing under that run). A leader that dies between start and finish leaves
// the request Executing; the next leader finds it:
//
//   - "operator.manage", the package's own, is carried out by a command
//     (operator.add or operator.remove naming the request) that marks the request
//     Executed in the same transaction as the change, and is refused once it is.
//     So the next leader simply runs it again: it takes effect once.
//   - Any other action's effect is outside this package; its runner may have run
//     or not. The next leader commits operator.request.interrupt: the request
//     ends Interrupted, never runs twice, and an operator checks the audit log for
//     the effect and proposes again if it is missing.
//
// An approved request is never lost: it stays Approved until a leader with a
// runner for its action starts it.

// lead runs for one leadership term.
func (s *Service) lead(term context.Context) {
	// A term may start at any time, Close's Wait too: the Add happens under
	// s.mu before Close may stop, or not at all (a WaitGroup's Add must not
	// race its Wait at zero).
	s.mu.Lock()
	if s.closed.Err() != nil {
		s.mu.Unlock()
		return
	}
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()
	ctx, cancel := context.WithCancel(term)
	defer cancel()
	defer context.AfterFunc(s.closed, cancel)()
	for s.c.Barrier(ctx) != nil {
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
	sub := s.c.Subscribe(64, commandDecide, commandStart)
	defer sub.Close()
	tick := time.NewTicker(s.sweep)
	defer tick.Stop()
	var shared bool
	var shareAt time.Time
	for {
		if !shared && !time.Now().Before(shareAt) {
			shared = s.shareKey(ctx)
			shareAt = time.Now().Add(shareRetry)
		}
		s.sweepOnce(ctx)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-sub.C:
		}
	}
}

// shareRetry is how often a leader tries again to send the operator CA key to
// voters that lack it (one was down, say).
const shareRetry = 30 * time.Second

// shareKey sends the operator CA key to every voter that lacks it, once the CA
// exists, so that any of them can sign when it leads. It reports whether every
// voter holds it (or there is no CA yet to share: Bootstrap shares it then).
func (s *Service) shareKey(ctx context.Context) bool {
	var hasCA bool
	_ = s.c.View(func(tx *bbolt.Tx) error { hasCA = tx.Bucket(bucketCA).Get(keyCACert) != nil; return nil })
	if !hasCA {
		return false
	}
	if err := s.c.ShareKey(ctx, keyName); err != nil {
		if ctx.Err() == nil {
			s.log.Error("operator: some voters lack the operator CA key; trying again", "err", err, "in", shareRetry)
		}
		return false
	}
	return true
}

// sweepOnce expires overdue requests and starts approved ones.
func (s *Service) sweepOnce(ctx context.Context) {
	var qs []*reqRecord
	err := s.c.View(func(tx *bbolt.Tx) error {
		var err error
		qs, err = requestRecords(tx, statePending, stateApproved, stateExecuting)
		return err
	})
	if err != nil {
		s.log.Error("operator: read requests", "err", err)
		return
	}
	now := time.Now()
	for _, r := range qs {
		if ctx.Err() != nil {
			return
		}
		q := r.request()
		switch q.State {
		case statePending:
			if !now.Before(q.Expires) {
				err := s.submit(ctx, commandExpire, expireBody{ID: q.ID}, nil)
				if err != nil && !errors.Is(err, cluster.ErrRefused) && ctx.Err() == nil {
					s.log.Warn("operator: expire request", "request", q.ID, "err", err)
				}
			}
		case stateApproved:
			if q.Action == actionOperatorManage || s.run != nil {
				s.spawn(ctx, q, "")
			}
		case stateExecuting:
			if s.isRunning(q.ID) {
				continue
			}
			if q.Action == actionOperatorManage {
				s.spawn(ctx, q, r.Run) // atomic with its finish: run it again
				continue
			}
			err := s.submit(ctx, commandInterrupt, startBody{ID: q.ID, Run: r.Run}, nil)
			if err == nil {
				s.log.Warn("operator: request interrupted by a leader change", "request", q.ID, "action", q.Action)
			} else if !errors.Is(err, cluster.ErrRefused) && ctx.Err() == nil {
				s.log.Warn("operator: mark request interrupted", "request", q.ID, "err", err)
			}
		}
	}
}

func (s *Service) isRunning(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.running[id]
}

// spawn executes q in a goroutine unless this process executes it already. run
// is the run ID of an execution to resume ("operator.manage" only), or empty
// to start one.
func (s *Service) spawn(ctx context.Context, q Request, run string) {
	s.mu.Lock()
	if s.running[q.ID] {
		s.mu.Unlock()
		return
	}
	s.running[q.ID] = true
	s.mu.Unlock()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer func() {
			s.mu.Lock()
			delete(s.running, q.ID)
			s.mu.Unlock()
		}()
		s.execute(ctx, q, run)
	}()
}

func (s *Service) execute(ctx context.Context, q Request, run string) {
	if run == "" {
		var err error
		if run, err = newID("run-"); err != nil {
			s.log.Error("operator: run ID", "err", err)
			return
		}
		if err := s.submit(ctx, commandStart, startBody{ID: q.ID, Run: run}, nil); err != nil {
			if !errors.Is(err, cluster.ErrRefused) && ctx.Err() == nil {
				s.log.Warn("operator: start request", "request", q.ID, "err", err)
			}
			return
		}
	}
	s.log.Info("operator: executing approved request", "request", q.ID, "action", q.Action)
	var res []byte
	var err error
	if q.Action == actionOperatorManage {
		err = s.manage(ctx, q)
		if err == nil || errors.Is(err, errNotExecuting) {
			return // recorded with the change itself, or by an earlier run
		}
		if ctx.Err() != nil || !refused(err) {
			// Not the change's fault (leadership lost, no CA key here, the
			// network): it stays executing, and this leader or the next one
			// runs it again, which is safe.
			if ctx.Err() == nil {
				s.log.Warn("operator: operator change not carried out; trying again", "request", q.ID, "err", err)
			}
			return
		}
	} else {
		res, err = s.run(ctx, q)
		if err != nil && ctx.Err() != nil {
			// The runner gave up because this node stopped leading: it was cut
			// short, not failed. Nothing is recorded; the next leader finds the
			// request executing and marks it interrupted, as if this one died.
			s.log.Warn("operator: request cut short by the loss of leadership", "request", q.ID)
			return
		}
	}
	// Record the outcome even if leadership was lost meanwhile: it happened.
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	fb := finishBody{ID: q.ID, Run: run, OK: err == nil, Result: res}
	if err != nil {
		fb.Error = err.Error()
	}
	if ferr := s.submit(fctx, commandFinish, fb, nil); ferr != nil {
		s.log.Error("operator: record the outcome of a request", "request", q.ID, "ran", err == nil, "err", ferr)
	}
}

// refused reports whether an operator change failed for good: the state machine
// refused it, or it cannot be carried out as asked.
func refused(err error) bool {
	return errors.Is(err, cluster.ErrRefused) || errors.Is(err, errKeyInUse) || errors.Is(err, errInvalid)
}

// manage carries out an approved "operator.manage" request: the change and
// the request's end are one command.
func (s *Service) manage(ctx context.Context, q Request) error {
	ch, err := ParseChange(q.Body)
	if err != nil {
		return fmt.Errorf("%w: %v", errInvalid, err)
	}
	sr := signRequest{Kind: kindAdd, Actor: q.Proposer.Actor(), Request: q.ID}
	switch ch.Op {
	case OpAdd:
		if _, err := s.signAdd(ctx, sr, ch); err != nil {
			return err
		}
		// signAdd finds an operator of that key without a command when one
		// exists: done by an earlier run if the request ended, else a key in use.
		var current State
		err := s.c.View(func(tx *bbolt.Tx) error {
			r, err := readReq(tx, q.ID)
			if r != nil {
				current = State(r.State)
			}
			return err
		})
		if err == nil && current == stateExecuting {
			err = errKeyInUse
		}
		return err
	default:
		return s.submit(ctx, commandRemove, removeBody{ID: ch.ID, Actor: q.Proposer.Actor(), Request: q.ID}, nil)
	}
}
