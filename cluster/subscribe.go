package cluster

import (
	"slices"
	"sync"
)

// Event tells a subscriber of one applied command. An Event with Resync
// set carries no command: the subscriber missed events (its buffer was
// full, or the state was replaced from a snapshot) and must rebuild what it
// derives from the state with View before it relies on later events.
type Event struct {
	Entry  Entry
	Result []byte
	Resync bool
}

// Subscription delivers events for the command types it asked for.
//
// Contract: events arrive in apply order, after the change is committed to
// the local state (a View in the handler sees it). Delivery never blocks
// Apply: when the buffer is full the event is dropped and the subscriber
// gets a Resync event as soon as there is room. The first event on a new
// subscription may precede or follow state the subscriber reads at start;
// read the state after subscribing and treat events as idempotent hints.
type Subscription struct {
	C <-chan Event

	ch     chan Event
	types  []string
	lost   bool
	closed bool
	s      *subscribers
}

type subscribers struct {
	mu   sync.Mutex
	list []*Subscription
}

// Subscribe registers for events of the given command types (all types if
// none), with room for buffer undelivered events.
func (c *Cluster) Subscribe(buffer int, types ...string) *Subscription {
	if buffer < 1 {
		buffer = 1
	}
	ch := make(chan Event, buffer)
	sub := &Subscription{C: ch, ch: ch, types: types, s: c.subs}
	c.subs.mu.Lock()
	c.subs.list = append(c.subs.list, sub)
	c.subs.mu.Unlock()
	return sub
}

// Close ends the subscription and closes C.
func (sub *Subscription) Close() {
	s := sub.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if sub.closed {
		return
	}
	sub.closed = true
	s.list = slices.DeleteFunc(s.list, func(x *Subscription) bool { return x == sub })
	close(sub.ch)
}

func (s *subscribers) publish(e Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, sub := range s.list {
		if len(sub.types) > 0 && !slices.Contains(sub.types, e.Entry.Command.Type) {
			continue
		}
		sub.offer(e)
	}
}

// offer sends e without blocking; called with s.mu held.
func (sub *Subscription) offer(e Event) {
	if sub.lost {
		select {
		case sub.ch <- Event{Resync: true}:
			sub.lost = false
		default:
			return
		}
	}
	select {
	case sub.ch <- e:
	default:
		sub.lost = true
	}
}

// resync tells every subscriber to rebuild from the state.
func (s *subscribers) resync() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, sub := range s.list {
		sub.lost = true
		select {
		case sub.ch <- Event{Resync: true}:
			sub.lost = false
		default:
		}
	}
}

func (s *subscribers) closeAll() {
	s.mu.Lock()
	list := s.list
	s.list = nil
	s.mu.Unlock()
	for _, sub := range list {
		s.mu.Lock()
		if !sub.closed {
			sub.closed = true
			close(sub.ch)
		}
		s.mu.Unlock()
	}
}
