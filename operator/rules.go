package operator

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"go.etcd.io/bbolt"

	"github.com/inkan-pki/inkan/cluster"
)

// The rules of dual control live in the replicated state, one set for the
// cluster: every node decides with the same rules, read in the same transaction
// as the operators, so no node's configuration can weaken them. Bootstrap
// records the rules the node starts with (Config.Rules, else defaultRules)
// before the first operator exists; after that only SetRules changes them —
// through the admin API, under the rule of "policy.apply" — and every change
// is a leaf in the audit log. A cluster made by an earlier version has no record
// until an admin applies rules, and its nodes hold to their Config.Rules (the
// code's defaults) meanwhile: nothing is written on its own during a rolling
// upgrade, when some replicas could not apply it.
//
// Counting rules (Over) count an operator's items over a window (Within): the
// items each operator acted on without approval are recorded by the state machine
// (CommandUsage), which refuses a request that would take the operator's total
// in the window past Over, so two requests that each stay under the threshold
// cannot pass it together, on one node or on two.
var (
	bucketRules = []byte("operator.rules")
	keyRules    = []byte("current")
	// bucketUsage: operator ID, 0, action, 0, Raft index (8 bytes), command
	// sequence (4 bytes) → usageRecord.
	bucketUsage = []byte("operator.usage")
)

// defaultWithin is a counting rule's window when the rule names none.
const defaultWithin = time.Hour

// maxWithin bounds a counting rule's window; usage older than that is pruned.
const maxWithin = 30 * 24 * time.Hour

// Refusals of the rules' commands.
var (
	// errOverThreshold: the operator's items within the rule's window would pass
	// its Over; the request needs approval.
	errOverThreshold = cluster.NewRefusal("operator.over-threshold", "operator: the operator's items within the rule's window would pass its threshold; the request needs approval")
	// errRulesSet: a seed of the rules when the state has rules already.
	errRulesSet = cluster.NewRefusal("operator.rules-set", "operator: the cluster has rules of dual control already")
)

type ruleRecord struct {
	_      struct{} `cbor:",toarray"`
	Action string
	M      int
	Role   string
	TTL    int64
	Over   int
	Within int64
}

type (
	// rulesBody sets the rules (CommandRules).
	rulesBody struct {
		_       struct{}     `cbor:",toarray"`
		Rules   []ruleRecord // by action
		Actor   string
		Request string // the approved request it carries out, if any
		Seed    bool   // the first leader's: accepted only while the state has none
	}
	// rulesState is what the state keeps.
	rulesState struct {
		_       struct{} `cbor:",toarray"`
		Rules   []ruleRecord
		Version uint64
		Set     int64
	}
	// usageBody counts an operator's items under a counting rule (CommandUsage).
	usageBody struct {
		_        struct{} `cbor:",toarray"`
		Operator []byte   // the operator's certificate fingerprint
		Action   string
		Count    int
		Over     int
		Within   int64
	}
	usageRecord struct {
		_     struct{} `cbor:",toarray"`
		Time  int64
		Count int
	}
)

func toRecords(rules map[string]Rule) []ruleRecord {
	out := make([]ruleRecord, 0, len(rules))
	for _, a := range slices.Sorted(maps.Keys(rules)) {
		r := rules[a]
		out = append(out, ruleRecord{Action: a, M: r.M, Role: string(r.Role), TTL: int64(r.TTL), Over: r.Over, Within: int64(r.Within)})
	}
	return out
}

func fromRecords(rs []ruleRecord) map[string]Rule {
	out := make(map[string]Rule, len(rs))
	for _, r := range rs {
		out[r.Action] = Rule{M: r.M, Role: Role(r.Role), TTL: time.Duration(r.TTL), Over: r.Over, Within: time.Duration(r.Within)}
	}
	return out
}

// normalize gives a counting rule its default window.
func normalize(rules map[string]Rule) map[string]Rule {
	out := maps.Clone(rules)
	for a, r := range out {
		if r.Over > 0 && r.Within == 0 {
			r.Within = defaultWithin
			out[a] = r
		}
	}
	return out
}

// checkRules checks a set of rules as the state machine does: each rule's shape,
// and that the rules a voter's join is held to ("cluster.membership" and
// "ca.key.transfer": a voter receives the keys) name the same role, so that
// the request can be held to both.
func checkRules(rules map[string]Rule) error {
	var errs []error
	for _, a := range slices.Sorted(maps.Keys(rules)) {
		errs = append(errs, rules[a].check(a))
	}
	m, okM := rules[actionClusterMembership]
	k, okK := rules[actionCAKeyTransfer]
	if okM && okK && m.Role != k.Role {
		errs = append(errs, fmt.Errorf("operator: rules.%s.role (%s) and rules.%s.role (%s) must be the same: a voter's join is held to both",
			actionClusterMembership, m.Role, actionCAKeyTransfer, k.Role))
	}
	return errors.Join(errs...)
}

// RulesIn returns the rules of dual control in force: the state's, or, until the
// first leader has recorded them, the ones this node would record.
func (s *Service) RulesIn(tx *bbolt.Tx) (map[string]Rule, error) {
	rules, err := recordedRules(tx)
	if err != nil || rules == nil {
		return maps.Clone(s.rules), err
	}
	return rules, nil
}

// recordedRules returns the rules the state records, nil before the first
// leader records them.
func recordedRules(tx *bbolt.Tx) (map[string]Rule, error) {
	st, err := readRules(tx)
	if err != nil || st == nil {
		return nil, err
	}
	return fromRecords(st.Rules), nil
}

// Rules returns the rules of dual control in force (RulesIn, on this node's
// state).
func (s *Service) Rules() map[string]Rule {
	var out map[string]Rule
	if err := s.c.View(func(tx *bbolt.Tx) error { var err error; out, err = s.RulesIn(tx); return err }); err != nil {
		s.log.Error("operator: read the rules of dual control", "err", err)
		return maps.Clone(s.rules)
	}
	return out
}

// RulesVersion is the version of the rules in the state: 0 before the first
// leader recorded them, then 1 and up with each change.
func RulesVersion(tx *bbolt.Tx) (uint64, error) {
	st, err := readRules(tx)
	if err != nil || st == nil {
		return 0, err
	}
	return st.Version, nil
}

func readRules(tx *bbolt.Tx) (*rulesState, error) {
	v := tx.Bucket(bucketRules).Get(keyRules)
	if v == nil {
		return nil, nil
	}
	var st rulesState
	if err := decMode.Unmarshal(v, &st); err != nil {
		return nil, fmt.Errorf("operator: rules: %w", err)
	}
	return &st, nil
}

// SetRules replaces the cluster's rules of dual control. The caller has checked
// that the actor may (the admin API holds it to the rule of "policy.apply");
// actor is the audit log's name for who asked, request the approved request it
// carries out, if any. Rules are checked as Config.Rules are.
func (s *Service) SetRules(ctx context.Context, actor, request string, rules map[string]Rule) error {
	rules = normalize(rules)
	for a, r := range rules {
		if err := r.validate(a); err != nil {
			return fmt.Errorf("%w: %v", errInvalid, err)
		}
	}
	if err := checkRules(rules); err != nil {
		return fmt.Errorf("%w: %v", errInvalid, err)
	}
	return s.submit(ctx, commandRules, rulesBody{Rules: toRecords(rules), Actor: actor, Request: request}, nil)
}

// seedRules records this node's rules if the state has none yet (on the leader).
func (s *Service) seedRules(ctx context.Context) error {
	var have bool
	if err := s.c.View(func(tx *bbolt.Tx) error { have = tx.Bucket(bucketRules).Get(keyRules) != nil; return nil }); err != nil || have {
		return err
	}
	err := s.submit(ctx, commandRules, rulesBody{Rules: toRecords(s.rules), Actor: actorSystem, Seed: true}, nil)
	if errors.Is(err, errRulesSet) {
		err = nil
	}
	return err
}

func applyRules(tx *bbolt.Tx, e cluster.Entry) ([]byte, error) {
	var b rulesBody
	if err := decode(e, &b); err != nil {
		return nil, err
	}
	if !slices.IsSortedFunc(b.Rules, func(x, y ruleRecord) int { return cmpString(x.Action, y.Action) }) {
		return nil, refuse(errInvalid, "rules out of order")
	}
	rules := fromRecords(b.Rules)
	if len(rules) != len(b.Rules) {
		return nil, refuse(errInvalid, "an action has two rules")
	}
	if err := checkRules(rules); err != nil {
		return nil, refuse(errInvalid, "%v", err)
	}
	for _, r := range b.Rules {
		if r.Over > 0 && (r.Within <= 0 || time.Duration(r.Within) > maxWithin) {
			return nil, refuse(errInvalid, "rules.%s.within: want 1ns..%s with over", r.Action, maxWithin)
		}
	}
	old, err := readRules(tx)
	if err != nil {
		return nil, err
	}
	if b.Seed && old != nil {
		return nil, cluster.Refuse(errRulesSet)
	}
	// Rules that look stricter must not reopen the initial ceremony: once
	// operator.manage can be met, its new rule must be met too.
	if mr, n, ok, err := manageRule(tx); err != nil {
		return nil, err
	} else if nr, has := rules[actionOperatorManage]; e.Command.Version >= 2 && ok && has && n >= mr.M+1 {
		nn, err := countActive(tx, nr.Role, "")
		if err != nil {
			return nil, err
		}
		if nn < nr.M+1 {
			return nil, refuse(errBelowRule, "rules.%s: %d approvals besides the proposer's need %d active %s, there are %d: add them first",
				actionOperatorManage, nr.M, nr.M+1, nr.Role, nn)
		}
	}
	st := rulesState{Rules: b.Rules, Version: 1, Set: e.Time.UnixNano()}
	if old != nil {
		st.Version = old.Version + 1
	}
	v, err := encMode.Marshal(st)
	if err != nil {
		return nil, err
	}
	if err := tx.Bucket(bucketRules).Put(keyRules, v); err != nil {
		return nil, err
	}
	return encodeResult(result{ID: fmt.Sprint(st.Version), Action: actionPolicyApply, Request: b.Request})
}

func cmpString(a, b string) int { return bytes.Compare([]byte(a), []byte(b)) }

// rulesDigest is the SHA-256 of a set of rules as the state records them: the
// audit log's name for them.
func rulesDigest(rules map[string]Rule) []byte {
	b, err := encMode.Marshal(toRecords(normalize(rules)))
	if err != nil {
		return nil
	}
	return sum256(b)
}

// Counting an operator's items.

func usagePrefix(opID, action string) []byte {
	return []byte(opID + "\x00" + action + "\x00")
}

// usageSince sums the items an operator acted on under action after since.
func usageSince(tx *bbolt.Tx, opID, action string, since time.Time) (int, error) {
	b := tx.Bucket(bucketUsage)
	prefix := usagePrefix(opID, action)
	c := b.Cursor()
	total := 0
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		var u usageRecord
		if err := decMode.Unmarshal(v, &u); err != nil {
			return 0, fmt.Errorf("operator: usage record: %w", err)
		}
		if u.Time > since.UnixNano() {
			total += u.Count
		}
	}
	return total, nil
}

// pruneUsage drops an operator's counts of action from before (the state
// machine keeps maxWithin of them).
func pruneUsage(tx *bbolt.Tx, opID, action string, before time.Time) error {
	b := tx.Bucket(bucketUsage)
	prefix := usagePrefix(opID, action)
	var old [][]byte
	c := b.Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		var u usageRecord
		if err := decMode.Unmarshal(v, &u); err != nil {
			return fmt.Errorf("operator: usage record: %w", err)
		}
		if u.Time <= before.UnixNano() {
			old = append(old, bytes.Clone(k))
		}
	}
	for _, k := range old {
		if err := b.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

func applyUsage(tx *bbolt.Tx, e cluster.Entry) ([]byte, error) {
	var b usageBody
	if err := decode(e, &b); err != nil {
		return nil, err
	}
	if !validAction(b.Action) || b.Count < 1 || b.Over < 1 || b.Within <= 0 || time.Duration(b.Within) > maxWithin {
		return nil, refuse(errInvalid, "usage of %q: count %d, over %d, within %d", b.Action, b.Count, b.Over, b.Within)
	}
	op, err := opByFingerprint(tx, b.Operator)
	if err != nil {
		return nil, err
	}
	if op == nil || Status(op.Status) != Active {
		return nil, refuse(errNotActive, "operator")
	}
	if err := pruneUsage(tx, op.ID, b.Action, e.Time.Add(-maxWithin)); err != nil {
		return nil, err
	}
	used, err := usageSince(tx, op.ID, b.Action, e.Time.Add(-time.Duration(b.Within)))
	if err != nil {
		return nil, err
	}
	if used+b.Count > b.Over {
		return nil, refuse(errOverThreshold, "%s: %d items within %s already, %d more would pass %d",
			b.Action, used, time.Duration(b.Within), b.Count, b.Over)
	}
	key := append(usagePrefix(op.ID, b.Action), make([]byte, 12)...)
	binary.BigEndian.PutUint64(key[len(key)-12:], e.Index)
	binary.BigEndian.PutUint32(key[len(key)-4:], uint32(e.Seq))
	v, err := encMode.Marshal(usageRecord{Time: e.Time.UnixNano(), Count: b.Count})
	if err != nil {
		return nil, err
	}
	if err := tx.Bucket(bucketUsage).Put(key, v); err != nil {
		return nil, err
	}
	return encodeResult(result{ID: op.ID, Action: b.Action, Approvals: used + b.Count, M: b.Over, Role: op.Role})
}

// Take counts count items of action for operator by under rule r (a counting
// rule that Required said needs no approval for them): the state machine
// refuses with errOverThreshold if, with what by did within the rule's window,
// they would pass its Over, and the caller then proposes the request instead.
func (s *Service) Take(ctx context.Context, by Operator, action string, count int, r Rule) error {
	if r.Over <= 0 {
		return nil
	}
	within := r.Within
	if within == 0 {
		within = defaultWithin
	}
	return s.submit(ctx, commandUsage, usageBody{Operator: by.Fingerprint[:], Action: action, Count: count, Over: r.Over, Within: int64(within)}, nil)
}
