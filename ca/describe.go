package ca

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"math/big"
	"time"

	"github.com/inkan-pki/inkan/cluster"
	"github.com/inkan-pki/inkan/crlreason"
)

// description is what the audit log records of one change the authority applied,
// without depending on the audit package (the arguments of a leaf, see
// describedHandler): the
// leaf type, who asked, the serial it is about (nil for issuer changes) and data
// made only of identifiers, codes and hashes — the certificate only as its SHA-256,
// link and person as the keyed hashes the request carried, never personal data in
// clear. Data's values are strings, byte strings, integers and lists of
// strings, so it encodes in deterministic CBOR without tags.
type description struct {
	Type   string // the leaf type
	Actor  string // "enrollment", "system", or the operator's actor string as given
	Serial *big.Int
	Data   map[string]any
}

// Types of description. cert.issued and cert.revoked are the audit package's own
// leaf types of the same names.
const (
	typeIssuerCreated   = "ca.issuer.created"
	typeIssuerInstalled = "ca.issuer.installed"
	typeIssuerRetired   = "ca.issuer.retired"
	typeIntent          = "cert.intent"
	typeIssued          = "cert.issued"
	typeResolved        = "cert.intent.resolved"
	typeRevoked         = "cert.revoked"
	typeHeld            = "cert.held"
	typeReleased        = "cert.released"
	typeRelinked        = "cert.relinked"
)

func sum256(b []byte) []byte {
	h := sha256.Sum256(b)
	return h[:]
}

func rfc3339(ns int64) string { return time.Unix(0, ns).UTC().Format(time.RFC3339) }

// describedHandler is a handler of the authority's commands that also tells the
// audit log what the commands it applied changed: node finds Describe on the
// handlers Handlers returns and hands it to the audit hook, so a command the
// authority adds is audited without a change there.
type describedHandler struct{ cluster.Handler }

// Describe calls leaf once per description of an applied command
// (describeCommand): the leaf type, who asked, the serial it is about or nil,
// and its data.
func (describedHandler) Describe(e cluster.Entry, result []byte, leaf func(typ, actor string, serial *big.Int, data map[string]any)) error {
	ds, err := describeCommand(e, result)
	if err != nil {
		return err
	}
	for _, d := range ds {
		leaf(d.Type, d.Actor, d.Serial, d.Data)
	}
	return nil
}

// errForeignCommand: describeCommand was given another package's command.
var errForeignCommand = errors.New("not a command of the authority")

// describeCommand describes an applied command of the authority for the audit log
// (through Describe): one description per change, so one leaf per
// certificate — a resolve of several dangling intents gives one per serial it
// resolved, and none if it found them all issued meanwhile. It reads the command's
// body and result, never the state, so it is a pure function of what the hook is
// given. It returns an error for a command type that is not the authority's.
func describeCommand(e cluster.Entry, result []byte) ([]description, error) {
	if e.Command.Type == commandResolve {
		var res changeResult
		if err := decMode.Unmarshal(result, &res); err != nil {
			return nil, fmt.Errorf("ca: describe %s: result: %w", e.Command.Type, err)
		}
		out := []description{}
		for _, s := range res.Serials {
			out = append(out, description{Type: typeResolved, Actor: actorSystem, Serial: new(big.Int).SetBytes(s),
				Data: map[string]any{"issuer": res.Issuer, "reason": int(crlreason.CessationOfOperation)}})
		}
		return out, nil
	}
	switch e.Command.Type {
	case commandIntents, commandIssues:
		return describeBatch(e, result)
	case commandNonce:
		// A nonce admits one re-bind; what the re-bind does is audited.
		return []description{}, nil
	case commandMigratePeople:
		return describeMigrate(result)
	case commandRelink:
		d, err := describeRelink(e, result)
		if err != nil {
			return nil, err
		}
		return []description{d}, nil
	}
	d, err := describe(e, result)
	if err != nil {
		return nil, err
	}
	return []description{d}, nil
}

// describeBatch describes the items of a batch that were applied, each as the
// single command would be; refused ones changed nothing.
func describeBatch(e cluster.Entry, result []byte) ([]description, error) {
	var res batchResult
	if err := decMode.Unmarshal(result, &res); err != nil {
		return nil, fmt.Errorf("ca: describe %s: result: %w", e.Command.Type, err)
	}
	refused := res.refusedIndex()
	out := []description{}
	if e.Command.Type == commandIntents {
		b, err := decodeIntents(e.Command)
		if err != nil {
			return nil, fmt.Errorf("ca: describe: %w", err)
		}
		for i, it := range b.Items {
			if _, ok := refused[i]; !ok {
				out = append(out, describeIntent(it))
			}
		}
		return out, nil
	}
	var b issuesBody
	if err := e.Command.Decode(&b); err != nil {
		return nil, fmt.Errorf("ca: describe: %w", err)
	}
	for i, it := range b.Items {
		if _, ok := refused[i]; !ok {
			out = append(out, describeIssued(it, res.Issuer))
		}
	}
	return out, nil
}

func describeIntent(b intentBody) description {
	data := map[string]any{"issuer": b.Issuer, "tbs_sha256": b.TBSHash, "profile": b.Profile,
		"policy_version": b.PolicyVersion, "not_after": rfc3339(b.NotAfter), "kind": int(b.Kind)}
	if b.MaxPerPerson > 0 {
		data["max_per_person"] = b.MaxPerPerson
	}
	if len(b.Link) > 0 {
		data["link"] = b.Link
	}
	if len(b.Person) > 0 {
		data["person"] = b.Person
	}
	if m := PersonMode(b.PersonMode); m != personNone {
		data["person_mode"] = map[PersonMode]string{PersonNew: "new", PersonSame: "same", PersonJoin: "join"}[m]
	}
	if b.Node != "" {
		data["node"] = b.Node
	}
	return description{Type: typeIntent, Actor: b.Actor, Serial: new(big.Int).SetBytes(b.Serial), Data: data}
}

func describeIssued(b issueBody, issuer string) description {
	return description{Type: typeIssued, Actor: b.Actor, Serial: new(big.Int).SetBytes(b.Serial), Data: map[string]any{
		"issuer": issuer, "cert_sha256": sum256(b.DER)}}
}

func describe(e cluster.Entry, result []byte) (description, error) {
	var res changeResult
	if len(result) > 0 {
		if err := decMode.Unmarshal(result, &res); err != nil {
			return description{}, fmt.Errorf("ca: describe %s: result: %w", e.Command.Type, err)
		}
	}
	serial := func(b []byte) *big.Int { return new(big.Int).SetBytes(b) }
	var d description
	var err error
	switch e.Command.Type {
	case commandIssuerCreate:
		var b issuerCreateBody
		if err = e.Command.Decode(&b); err == nil {
			d = description{Type: typeIssuerCreated, Actor: b.Actor, Data: map[string]any{
				"issuer": b.ID, "key_label": b.KeyLabel, "public_key_sha256": sum256(b.PublicKey), "crl_shards": b.CRLShards}}
		}
	case commandIssuerInstall:
		var b issuerInstallBody
		if err = e.Command.Decode(&b); err == nil {
			chain := []string{}
			for _, c := range b.Chain {
				chain = append(chain, fmt.Sprintf("%x", sum256(c)))
			}
			d = description{Type: typeIssuerInstalled, Actor: b.Actor, Data: map[string]any{
				"issuer": b.ID, "cert_sha256": sum256(b.Cert), "chain_sha256": chain}}
		}
	case commandIssuerRetire:
		var b issuerRetireBody
		if err = e.Command.Decode(&b); err == nil {
			d = description{Type: typeIssuerRetired, Actor: b.Actor, Data: map[string]any{"issuer": b.ID}}
		}
	case commandIntent:
		var b intentBody
		if b, err = decodeIntent(e.Command); err == nil {
			d = describeIntent(b)
		}
	case commandIssue:
		var b issueBody
		if err = e.Command.Decode(&b); err == nil {
			d = describeIssued(b, res.Issuer)
		}
	case commandRevoke, commandHold, commandRelease:
		var b statusBodyV2
		if b, err = decodeStatusCommand(e.Command); err == nil {
			typ := map[string]string{commandRevoke: typeRevoked, commandHold: typeHeld, commandRelease: typeReleased}[e.Command.Type]
			data := map[string]any{"issuer": res.Issuer}
			switch e.Command.Type {
			case commandRevoke:
				data["reason"] = b.Reason
			case commandHold:
				data["reason"] = int(crlreason.CertificateHold)
			}
			d = description{Type: typ, Actor: b.Actor, Serial: serial(b.Serial), Data: data}
		}
	default:
		return description{}, fmt.Errorf("ca: describe: %q is %w", e.Command.Type, errForeignCommand)
	}
	if err != nil {
		return description{}, fmt.Errorf("ca: describe: %w", err)
	}
	return d, nil
}

// typePersonMigrated: a certificate issued before person records was given its
// JPKI link's person record.
const typePersonMigrated = "cert.person.migrated"

// describeMigrate: one leaf per certificate moved, with its person record.
func describeMigrate(result []byte) ([]description, error) {
	var res migrateResult
	if err := decMode.Unmarshal(result, &res); err != nil {
		return nil, fmt.Errorf("ca: describe %s: result: %w", commandMigratePeople, err)
	}
	if len(res.Persons) != len(res.Serials) {
		return nil, fmt.Errorf("ca: describe %s: %d serials, %d persons", commandMigratePeople, len(res.Serials), len(res.Persons))
	}
	out := []description{}
	for i, s := range res.Serials {
		out = append(out, description{Type: typePersonMigrated, Actor: actorSystem, Serial: new(big.Int).SetBytes(s),
			Data: map[string]any{"person": res.Persons[i]}})
	}
	return out, nil
}

// describeRelink: the old and the new link hash, and nothing else.
func describeRelink(e cluster.Entry, result []byte) (description, error) {
	var b relinkBody
	if err := e.Command.Decode(&b); err != nil {
		return description{}, fmt.Errorf("ca: describe: %w", err)
	}
	var res relinkResult
	if err := decMode.Unmarshal(result, &res); err != nil {
		return description{}, fmt.Errorf("ca: describe %s: result: %w", e.Command.Type, err)
	}
	old := res.OldLink
	if old == nil {
		old = []byte{}
	}
	return description{Type: typeRelinked, Actor: b.Actor, Serial: new(big.Int).SetBytes(b.Serial),
		Data: map[string]any{"old_link": old, "new_link": b.Link}}, nil
}
