package policy

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"testing/fstest"
	"time"

	"github.com/fxamacker/cbor/v2"
	"go.etcd.io/bbolt"

	"github.com/inkan-pki/inkan/cluster"
	"github.com/inkan-pki/inkan/policies"
)

// commandApply is the command type of a profile change, at version 1.
const commandApply = "policy.apply"

// Errors callers act on. Those a change is refused with are cluster.Refusal
// sentinels, so that they keep their identity through the cluster.
var (
	// ErrVersion: the file's version is not above the active version of its profile.
	ErrVersion = cluster.NewRefusal("policy.version", "policy: the version does not go up")
	// ErrNoProfiles: no profile has been applied yet.
	ErrNoProfiles = errors.New("policy: no profile in the replicated state")
	// errActor: the actor is not "system" or an operator's "sha256:<64 hex>".
	errActor = cluster.NewRefusal("policy.actor", `policy: actor must be "system" or "sha256:<64 hex>"`)
	// ErrNotFound: no such profile or version.
	ErrNotFound = errors.New("policy: not found")
)

var (
	bucketActive  = []byte("policy.profiles") // name → stored (the active version)
	bucketHistory = []byte("policy.history")  // name, 0x00, version (8 bytes) → stored
)

type (
	applyBody struct {
		_     struct{} `cbor:",toarray"`
		File  string
		Data  []byte
		Actor string
	}
	// stored is a profile file as the state keeps it.
	stored struct {
		_       struct{} `cbor:",toarray"`
		File    string
		Data    []byte
		Version uint64
		Actor   string
		At      int64 // the leader's time of the apply, Unix ns
	}
	applyResult struct {
		_        struct{} `cbor:",toarray"`
		Name     string
		Version  uint64
		Previous uint64 // 0 for a new profile
	}
)

var (
	encMode = must(cbor.CoreDetEncOptions().EncMode())
	decMode = must(cbor.DecOptions{
		DupMapKey:       cbor.DupMapKeyEnforcedAPF,
		IndefLength:     cbor.IndefLengthForbidden,
		MaxNestedLevels: 16,
	}.DecMode())
)

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// ApplyCommand checks a profile file (every problem, with its line) and returns the
// command that makes it the active version of its profile. actor is "system" or the
// operator's "sha256:<64 hex>" (the audit log's forms).
func ApplyCommand(file string, data []byte, actor string) (cluster.Command, error) {
	if !validActor(actor) {
		return cluster.Command{}, fmt.Errorf("%w, not %q", errActor, actor)
	}
	if _, err := policies.Parse(file, data); err != nil {
		return cluster.Command{}, err
	}
	return cluster.NewCommand(commandApply, 1, applyBody{File: file, Data: data, Actor: actor})
}

// Handler is the cluster handler of policy.apply. Register it in
// cluster.Config.Handlers on every node. It also describes each apply for the
// audit log (Describe, see describedHandler).
func Handler() cluster.Handler {
	return describedHandler{cluster.NewHandler(commandApply, []uint{1}, [][]byte{bucketActive, bucketHistory}, apply)}
}

// apply refuses a body that does not decode, an actor the audit log could not name,
// a file that does not parse, and a version that is not above the active one; else
// it makes the file the profile's active version and keeps it in the history.
func apply(tx *bbolt.Tx, e cluster.Entry) ([]byte, error) {
	var b applyBody
	if err := e.Command.Decode(&b); err != nil {
		return nil, cluster.Refuse(fmt.Errorf("policy: apply: %w", err))
	}
	if !validActor(b.Actor) {
		return nil, cluster.Refuse(fmt.Errorf("%w, not %q", errActor, b.Actor))
	}
	p, err := policies.Parse(b.File, b.Data)
	if err != nil {
		return nil, cluster.Refuse(err)
	}
	prev, err := read(tx.Bucket(bucketActive).Get([]byte(p.Name)))
	if err != nil {
		return nil, err
	}
	var previous uint64
	if prev != nil {
		previous = prev.Version
		if p.Version <= prev.Version {
			return nil, cluster.Refuse(fmt.Errorf("%w: profile %s version %d, active %d", ErrVersion, p.Name, p.Version, prev.Version))
		}
	}
	v, err := encMode.Marshal(stored{File: b.File, Data: b.Data, Version: p.Version, Actor: b.Actor, At: e.Time.UnixNano()})
	if err != nil {
		return nil, err
	}
	if err := tx.Bucket(bucketActive).Put([]byte(p.Name), v); err != nil {
		return nil, err
	}
	if err := tx.Bucket(bucketHistory).Put(historyKey(p.Name, p.Version), v); err != nil {
		return nil, err
	}
	return encMode.Marshal(applyResult{Name: p.Name, Version: p.Version, Previous: previous})
}

func historyKey(name string, version uint64) []byte {
	k := append([]byte(name), 0)
	return binary.BigEndian.AppendUint64(k, version)
}

func read(v []byte) (*stored, error) {
	if v == nil {
		return nil, nil
	}
	var s stored
	if err := decMode.Unmarshal(v, &s); err != nil {
		return nil, fmt.Errorf("policy: stored profile: %w", err)
	}
	return &s, nil
}

// active builds the set of the active profiles, keyed by pseudonymKey (the node's
// secret) with defaultProfile for enrolments that name none. ErrNoProfiles if none
// was applied.
func active(tx *bbolt.Tx, pseudonymKey []byte, defaultProfile string) (*policies.Set, error) {
	fsys := fstest.MapFS{}
	err := tx.Bucket(bucketActive).ForEach(func(k, v []byte) error {
		s, err := read(v)
		if err != nil {
			return err
		}
		// Named after the profile, so two profiles applied from files of one name
		// cannot collide.
		fsys[string(k)+".yaml"] = &fstest.MapFile{Data: s.Data}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(fsys) == 0 {
		return nil, ErrNoProfiles
	}
	set, err := policies.Load(fsys, pseudonymKey, defaultProfile)
	if err != nil {
		return nil, fmt.Errorf("policy: active profiles: %w", err)
	}
	if _, ok := set.Profile(defaultProfile); !ok {
		return nil, fmt.Errorf("policy: active profiles: the default profile %q is not among them", defaultProfile)
	}
	return set, nil
}

// Version is one applied version of a profile.
type Version struct {
	Profile *policies.Profile
	File    string
	Data    []byte
	Actor   string
	At      time.Time
}

// Store is the replicated profile store as one of the cluster's bbolt
// transactions sees it: the active version of each profile, and what a
// candidate file would change.
type Store struct{ tx *bbolt.Tx }

// Read is the profile store in tx.
func Read(tx *bbolt.Tx) Store { return Store{tx} }

// Lookup returns the active version of the named profile.
func (st Store) Lookup(name string) (Version, error) {
	return version(st.tx.Bucket(bucketActive).Get([]byte(name)), name)
}

// lookupVersion returns a version of the named profile, active or past: the file a
// certificate's ca.Record.PolicyVersion names.
func lookupVersion(tx *bbolt.Tx, name string, v uint64) (Version, error) {
	return version(tx.Bucket(bucketHistory).Get(historyKey(name, v)), name)
}

func version(v []byte, name string) (Version, error) {
	s, err := read(v)
	if err != nil {
		return Version{}, err
	}
	if s == nil {
		return Version{}, fmt.Errorf("%w: profile %q", ErrNotFound, name)
	}
	p, err := policies.Parse(s.File, s.Data)
	if err != nil {
		return Version{}, fmt.Errorf("policy: stored profile %s v%d: %w", name, s.Version, err)
	}
	return Version{Profile: p, File: s.File, Data: s.Data, Actor: s.Actor, At: time.Unix(0, s.At).UTC()}, nil
}

// Diff checks a candidate file and shows how it differs from the active version of
// its profile (policies.Profile.Diff), or the whole of it for a new profile, for an
// operator to read before applying it. It refuses a file that does not parse and a
// version that does not go up, as Apply would.
func (st Store) Diff(file string, data []byte) (string, error) {
	c, err := policies.Parse(file, data)
	if err != nil {
		return "", err
	}
	a, err := st.Lookup(c.Name)
	switch {
	case errors.Is(err, ErrNotFound):
		var b strings.Builder
		fmt.Fprintf(&b, "+++ %s v%d (new profile)\n", c.Name, c.Version)
		for _, l := range strings.SplitAfter(strings.TrimSuffix(c.Normalize(), "\n"), "\n") {
			b.WriteString("+ " + l)
		}
		b.WriteString("\n")
		return b.String(), nil
	case err != nil:
		return "", err
	case c.Version <= a.Profile.Version:
		return a.Profile.Diff(c), fmt.Errorf("%w: profile %s version %d, active %d", ErrVersion, c.Name, c.Version, a.Profile.Version)
	}
	return a.Profile.Diff(c), nil
}

// replicated is what Follow needs of the cluster: *cluster.Cluster.
type replicated interface {
	Subscribe(buffer int, types ...string) *cluster.Subscription
	View(fn func(tx *bbolt.Tx) error) error
}

// Follow hands use the active set at once and again after every applied change,
// until ctx ends. A set that does not build (none applied yet, or the default
// profile missing) is reported to failed and use keeps the last one; failed may be
// nil.
func Follow(ctx context.Context, c replicated, pseudonymKey []byte, defaultProfile string, use func(*policies.Set), failed func(error)) {
	sub := c.Subscribe(16, commandApply)
	defer sub.Close()
	load := func() {
		var set *policies.Set
		err := c.View(func(tx *bbolt.Tx) (err error) {
			set, err = active(tx, pseudonymKey, defaultProfile)
			return err
		})
		switch {
		case err == nil:
			use(set)
		case failed != nil:
			failed(err)
		}
	}
	load()
	for {
		select {
		case <-ctx.Done():
			return
		case _, ok := <-sub.C:
			if !ok {
				return
			}
			load()
		}
	}
}

// validActor: the operator and system forms of the audit log.
func validActor(a string) bool {
	if a == "system" {
		return true
	}
	h, ok := strings.CutPrefix(a, "sha256:")
	if !ok || len(h) != 64 {
		return false
	}
	return bytes.IndexFunc([]byte(h), func(r rune) bool { return !(r >= '0' && r <= '9' || r >= 'a' && r <= 'f') }) < 0
}

// submitter is what Seed needs of the cluster: *cluster.Cluster.
type submitter interface {
	Submit(ctx context.Context, cmd cluster.Command) ([]byte, error)
	View(fn func(tx *bbolt.Tx) error) error
}

// Seed applies, as actor, every *.yaml profile of fsys (policies.Shipped(), or an
// operator's directory) whose profile the state does not hold yet, and returns
// the names it applied. It never replaces a profile an operator applied, so a node
// may call it at every start without undoing an operator's change; one that another
// node seeded first is skipped. The one profile version it does replace is an
// earlier shipped file left as it was shipped, with a later version of it
// (policies.Profile.Upgrades): an upgraded cluster gets the shipped fix (the signing
// profile's extended key usage) unless an operator made the profile their own.
func Seed(ctx context.Context, c submitter, fsys fs.FS, actor string) ([]string, error) {
	files, err := fs.Glob(fsys, "*.yaml")
	if err != nil {
		return nil, fmt.Errorf("policy: seed: %w", err)
	}
	var applied []string
	for _, f := range files {
		data, err := fs.ReadFile(fsys, f)
		if err != nil {
			return applied, fmt.Errorf("policy: seed: %w", err)
		}
		p, err := policies.Parse(f, data)
		if err != nil {
			return applied, err
		}
		var active *stored
		if err := c.View(func(tx *bbolt.Tx) (err error) {
			active, err = read(tx.Bucket(bucketActive).Get([]byte(p.Name)))
			return err
		}); err != nil {
			return applied, fmt.Errorf("policy: seed: %w", err)
		}
		if active != nil && !p.Upgrades(active.Data, active.Version) {
			continue
		}
		cmd, err := ApplyCommand(f, data, actor)
		if err != nil {
			return applied, err
		}
		switch _, err := c.Submit(ctx, cmd); {
		case errors.Is(err, ErrVersion):
			continue // another node seeded it meanwhile
		case err != nil:
			return applied, fmt.Errorf("policy: seed %s: %w", p.Name, err)
		}
		applied = append(applied, p.Name)
	}
	return applied, nil
}

// Names lists the profiles that have an active version, in name order.
func (st Store) Names() ([]string, error) {
	var names []string
	err := st.tx.Bucket(bucketActive).ForEach(func(k, _ []byte) error {
		names = append(names, string(k))
		return nil
	})
	return names, err
}
