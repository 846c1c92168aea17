package ca

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.etcd.io/bbolt"
	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"

	"github.com/inkan-pki/inkan/cluster"
	"github.com/inkan-pki/inkan/crlreason"
)

// Command types of the authority, all at version 1 except ca.intent, which is at
// version 2 when it carries a per-person cap and at 3 when it carries a person
// record, a basic-4 hint or a nonce (at 1 without any), ca.intents, at 2 when an
// item needs version 3 of an intent (3 with first responses), and ca.revoke,
// ca.hold and ca.release, at 2 when they carry the new status's responses. Every one of them but ca.nonce and
// ca.people.migrate returns a result naming the issuer ID and the serials it
// changed (ChangeOf reads it), so subscribers (OCSP, CRLs) react without
// decoding bodies:
//
//	ca.issuer.create   a CA key made on every voter, certificate pending   issuer, no serial
//	ca.issuer.install  its certificate installed and active; the previous
//	                   active one retired                                   issuer, no serial
//	ca.issuer.retire   an issuer retired                                    issuer, no serial
//	ca.intent          a serial reserved with its TBS hash (Pending)        issuer, serial
//	ca.issue           the signed certificate recorded (Good)               issuer, serial
//	ca.intents         a batch of intents, each applied or refused alone    issuer, the serials
//	ca.issues          a batch of issued records, likewise                  applied, the refusals
//	ca.intent.resolve  dangling intents revoked, cessationOfOperation       issuer, the serials resolved
//	ca.revoke          revoked with a reason                                issuer, serial
//	ca.hold            certificateHold                                      issuer, serial
//	ca.release         back to Good from hold                               issuer, serial
//	ca.relink          the link hash changed (re-binding after a move)      issuer, serial,
//	                                                                        and the old link
//	ca.nonce           a nonce used (a re-bind's), nonce.go                 a code
//	ca.people.migrate  certificates moved to person records, person.go      serials, records
const (
	commandIssuerCreate  = "ca.issuer.create"
	commandIssuerInstall = "ca.issuer.install"
	commandIssuerRetire  = "ca.issuer.retire"
	commandIntent        = "ca.intent"
	commandIssue         = "ca.issue"
	commandResolve       = "ca.intent.resolve"
	commandRevoke        = "ca.revoke"
	commandHold          = "ca.hold"
	commandRelease       = "ca.release"
	commandRelink        = "ca.relink"
)

// statusCommands are the command types that change a certificate's status: what the
// OCSP responder and the CRL publisher subscribe to.
func statusCommands() []string {
	return []string{commandIntent, commandIssue, commandResolve, commandRevoke, commandHold, commandRelease,
		commandIntents, commandIssues}
}

// Actors the authority names itself (the same strings as the audit package's).
const (
	actorEnrollment = "enrollment"
	actorSystem     = "system"
)

// ErrActor: an actor that is not "enrollment", "system" or an operator named as
// "sha256:" and the 64 lower-case hex digits of their certificate's hash (the
// audit log's forms: a command it could not log would stop every replica).
var ErrActor = cluster.NewRefusal("ca.actor", `ca: actor must be "enrollment", "system" or "sha256:<64 hex>"`)

func validActor(a string) bool {
	if a == actorEnrollment || a == actorSystem {
		return true
	}
	h, ok := strings.CutPrefix(a, "sha256:")
	if !ok || len(h) != 64 {
		return false
	}
	for _, c := range h {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// isOperator tells whether an actor is an operator's (not the authority's own
// "system" or "enrollment").
func isOperator(a string) bool { return strings.HasPrefix(a, "sha256:") }

func checkActor(a string) error {
	if !validActor(a) {
		return cluster.Refuse(fmt.Errorf("%w, not %q", ErrActor, a))
	}
	return nil
}

// Command bodies.
type (
	issuerCreateBody struct {
		_         struct{} `cbor:",toarray"`
		ID        string
		KeyLabel  string
		PublicKey []byte
		CRLShards int
		Actor     string
	}
	issuerInstallBody struct {
		_     struct{} `cbor:",toarray"`
		ID    string
		Cert  []byte
		Chain [][]byte
		Actor string
	}
	issuerRetireBody struct {
		_     struct{} `cbor:",toarray"`
		ID    string
		Actor string
	}
	// intentBody is an intent at version 3: version 2, the person record (what
	// the intent does with it, and for a new one the name-and-birth hash), the
	// basic-4 hint for the cap, and the nonce it uses (its SHA-256 and expiry).
	intentBody struct {
		_             struct{} `cbor:",toarray"`
		Serial        []byte
		Issuer        string
		TBSHash       []byte
		Profile       string
		PolicyVersion uint64
		Link          []byte
		Person        []byte
		NotAfter      int64
		Kind          uint8
		Node          string
		Actor         string
		MaxPerPerson  int
		PersonMode    uint8
		NameBirth     []byte
		Hint          []byte
		NonceHash     []byte
		NonceExpires  int64
	}
	// intentBodyV2 is an intent at version 2: version 1 and a per-person cap.
	intentBodyV2 struct {
		_             struct{} `cbor:",toarray"`
		Serial        []byte
		Issuer        string
		TBSHash       []byte
		Profile       string
		PolicyVersion uint64
		Link          []byte
		Person        []byte
		NotAfter      int64
		Kind          uint8
		Node          string
		Actor         string
		MaxPerPerson  int
	}
	// intentBodyV1 is an intent at version 1, without a cap.
	intentBodyV1 struct {
		_             struct{} `cbor:",toarray"`
		Serial        []byte
		Issuer        string
		TBSHash       []byte
		Profile       string
		PolicyVersion uint64
		Link          []byte
		Person        []byte
		NotAfter      int64
		Kind          uint8
		Node          string
		Actor         string
	}
	issueBody struct {
		_      struct{} `cbor:",toarray"`
		Serial []byte
		DER    []byte
		Actor  string
	}
	resolveBody struct {
		_       struct{} `cbor:",toarray"`
		Issuer  string
		Serials [][]byte
	}
	// statusBody is ca.revoke, ca.hold or ca.release at version 1.
	statusBody struct {
		_      struct{} `cbor:",toarray"`
		Serial []byte
		Reason int
		Actor  string
	}
	// statusBodyV2 is a status command at version 2: version 1, the time the
	// change takes effect as the leader fixed it before it signed the new
	// status's responses (Unix nanoseconds; 0: the entry's time), and those
	// responses (the Publisher's bytes, empty for none), which the state does
	// not keep: every node hands them on as it applies the entry
	// (StatusResponses), as for an intent's first responses.
	statusBodyV2 struct {
		_         struct{} `cbor:",toarray"`
		Serial    []byte
		Reason    int
		Actor     string
		At        int64
		Responses []byte
	}
	relinkBody struct {
		_      struct{} `cbor:",toarray"`
		Serial []byte
		Link   []byte
		Actor  string
	}
	// changeResult is the result of every command but ca.relink.
	changeResult struct {
		_       struct{} `cbor:",toarray"`
		Issuer  string
		Serials [][]byte
	}
	// relinkResult is ca.relink's: the change, and the link it replaced (so
	// that the audit log can say what changed from the entry alone).
	relinkResult struct {
		_       struct{} `cbor:",toarray"`
		Issuer  string
		Serials [][]byte
		OldLink []byte
	}
)

// Handlers returns the cluster handlers of the authority's commands. Register them
// on every node (every replica applies every command). Each also describes its
// applied commands for the audit log (Describe, see describedHandler).
func Handlers() []cluster.Handler {
	v1 := []uint{1}
	hs := []cluster.Handler{
		cluster.NewHandler(commandIssuerCreate, v1, [][]byte{bucketIssuers, bucketCerts, bucketStatus, bucketIntents, bucketLinks, bucketPersons, bucketResponders, bucketHorizons}, applyIssuerCreate),
		cluster.NewHandler(commandIssuerInstall, v1, nil, applyIssuerInstall),
		cluster.NewHandler(commandIssuerRetire, v1, nil, applyIssuerRetire),
		cluster.NewHandler(commandIntent, []uint{1, 2, 3}, nil, applyIntent),
		cluster.NewHandler(commandIssue, v1, nil, applyIssue),
		cluster.NewHandler(commandResolve, v1, nil, applyResolve),
		cluster.NewHandler(commandRevoke, []uint{1, 2}, nil, applyRevoke),
		cluster.NewHandler(commandHold, []uint{1, 2}, nil, applyHold),
		cluster.NewHandler(commandRelease, []uint{1, 2}, nil, applyRelease),
		cluster.NewHandler(commandRelink, v1, nil, applyRelink),
		cluster.NewHandler(commandIntents, []uint{1, 2, 3}, nil, applyIntents),
		cluster.NewHandler(commandIssues, v1, nil, applyIssues),
		cluster.NewHandler(commandNonce, v1, [][]byte{bucketNonces, bucketNonceExpiry}, applyNonce),
		cluster.NewHandler(commandMigratePeople, v1, [][]byte{bucketPeople, bucketPersonLinks, bucketHints}, applyMigratePeople),
	}
	for i, h := range hs {
		hs[i] = describedHandler{h}
	}
	return hs
}

func refusef(format string, a ...any) error {
	return cluster.Refuse(fmt.Errorf("ca: "+format, a...))
}

func result(issuer string, serials ...[]byte) ([]byte, error) {
	return encMode.Marshal(changeResult{Issuer: issuer, Serials: serials})
}

func putIssuer(tx *bbolt.Tx, r *issuerRecord) error {
	v, err := encMode.Marshal(r)
	if err != nil {
		return err
	}
	return tx.Bucket(bucketIssuers).Put([]byte(r.ID), v)
}

func validIssuerID(id string) bool {
	if len(id) < 1 || len(id) > 64 {
		return false
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

const maxCRLShards = 1 << 12

func applyIssuerCreate(tx *bbolt.Tx, e cluster.Entry) ([]byte, error) {
	var b issuerCreateBody
	if err := e.Command.Decode(&b); err != nil {
		return nil, cluster.Refuse(err)
	}
	if err := checkActor(b.Actor); err != nil {
		return nil, err
	}
	if !validIssuerID(b.ID) {
		return nil, refusef("issuer ID %q: use 1-64 of a-z, 0-9 and '-'", b.ID)
	}
	if b.KeyLabel == "" || b.CRLShards < 1 || b.CRLShards > maxCRLShards {
		return nil, refusef("issuer %s: key label and 1-%d CRL shards required", b.ID, maxCRLShards)
	}
	if _, err := x509.ParsePKIXPublicKey(b.PublicKey); err != nil {
		return nil, refusef("issuer %s: public key: %v", b.ID, err)
	}
	if old, err := readIssuer(tx, b.ID); err != nil || old != nil {
		if err != nil {
			return nil, err
		}
		return nil, refusef("issuer %s exists", b.ID)
	}
	r := &issuerRecord{ID: b.ID, KeyLabel: b.KeyLabel, PublicKey: b.PublicKey, Status: uint8(issuerPending),
		CRLShards: b.CRLShards, Created: e.Time.UnixNano()}
	if err := putIssuer(tx, r); err != nil {
		return nil, err
	}
	return result(b.ID)
}

func applyIssuerInstall(tx *bbolt.Tx, e cluster.Entry) ([]byte, error) {
	var b issuerInstallBody
	if err := e.Command.Decode(&b); err != nil {
		return nil, cluster.Refuse(err)
	}
	if err := checkActor(b.Actor); err != nil {
		return nil, err
	}
	r, err := readIssuer(tx, b.ID)
	if err != nil {
		return nil, err
	}
	if r == nil || issuerStatus(r.Status) != issuerPending {
		return nil, refusef("issuer %q is not pending", b.ID)
	}
	cert, err := x509.ParseCertificate(b.Cert)
	if err != nil {
		return nil, refusef("issuer %s: certificate: %v", b.ID, err)
	}
	if !bytes.Equal(cert.RawSubjectPublicKeyInfo, r.PublicKey) {
		return nil, refusef("issuer %s: the certificate is not for the issuer's key", b.ID)
	}
	if !cert.IsCA || len(cert.SubjectKeyId) == 0 {
		return nil, refusef("issuer %s: the certificate is not a CA certificate with a subject key ID", b.ID)
	}
	if id, err := activeIssuerID(tx); err == nil {
		old, err := readIssuer(tx, id)
		if err != nil {
			return nil, err
		}
		old.Status = uint8(issuerRetired)
		if err := putIssuer(tx, old); err != nil {
			return nil, err
		}
	} else if !errors.Is(err, ErrNoActiveIssuer) {
		return nil, err
	}
	r.Cert, r.Chain, r.Status, r.NotAfter = b.Cert, b.Chain, uint8(issuerActive), cert.NotAfter.UnixNano()
	if err := putIssuer(tx, r); err != nil {
		return nil, err
	}
	if err := tx.Bucket(bucketIssuers).Put(keyActive, []byte(b.ID)); err != nil {
		return nil, err
	}
	if _, err := tx.Bucket(bucketStatus).CreateBucketIfNotExists([]byte(b.ID)); err != nil {
		return nil, err
	}
	if err := extendHorizon(tx, b.ID, 0); err != nil { // kept from now on: none yet
		return nil, err
	}
	return result(b.ID)
}

func applyIssuerRetire(tx *bbolt.Tx, e cluster.Entry) ([]byte, error) {
	var b issuerRetireBody
	if err := e.Command.Decode(&b); err != nil {
		return nil, cluster.Refuse(err)
	}
	if err := checkActor(b.Actor); err != nil {
		return nil, err
	}
	r, err := readIssuer(tx, b.ID)
	if err != nil {
		return nil, err
	}
	if r == nil || issuerStatus(r.Status) == issuerRetired {
		return nil, refusef("issuer %q is unknown or retired already", b.ID)
	}
	if issuerStatus(r.Status) == issuerActive {
		if err := tx.Bucket(bucketIssuers).Delete(keyActive); err != nil {
			return nil, err
		}
	}
	r.Status = uint8(issuerRetired)
	if err := putIssuer(tx, r); err != nil {
		return nil, err
	}
	return result(b.ID)
}

// validSerial: a positive serial's minimal big-endian bytes, at most 20 octets
// once DER-encoded (RFC 5280).
func validSerial(s []byte) bool {
	return len(s) > 0 && s[0] != 0 && (len(s) < 20 || len(s) == 20 && s[0]&0x80 == 0)
}

func putStatus(tx *bbolt.Tx, r *certRecord, serial []byte) error {
	b := tx.Bucket(bucketStatus).Bucket([]byte(r.Issuer))
	if b == nil {
		return fmt.Errorf("ca: no status bucket for issuer %s", r.Issuer)
	}
	return b.Put(serial, encodeStatus(Status(r.Status), r.Reason, r.NotAfter, r.RevokedAt))
}

func putCert(tx *bbolt.Tx, r *certRecord, serial []byte) error {
	v, err := encMode.Marshal(r)
	if err != nil {
		return err
	}
	if err := tx.Bucket(bucketCerts).Put(serial, v); err != nil {
		return err
	}
	return putStatus(tx, r, serial)
}

// intentVersion is the lowest version of ca.intent that holds b: the bytes of
// intents that need nothing new (and what the audit log holds of them) do not
// change.
func intentVersion(b *intentBody) uint {
	switch {
	case b.PersonMode != 0 || len(b.NameBirth) > 0 || len(b.Hint) > 0 || len(b.NonceHash) > 0 || b.NonceExpires != 0:
		return 3
	case b.MaxPerPerson != 0:
		return 2
	}
	return 1
}

// intentCommand encodes an intent at its lowest version.
func intentCommand(b intentBody) (cluster.Command, error) {
	switch intentVersion(&b) {
	case 1:
		return cluster.NewCommand(commandIntent, 1, intentV1(b))
	case 2:
		return cluster.NewCommand(commandIntent, 2, intentV2(b))
	}
	return cluster.NewCommand(commandIntent, 3, b)
}

func intentV1(b intentBody) intentBodyV1 {
	return intentBodyV1{Serial: b.Serial, Issuer: b.Issuer, TBSHash: b.TBSHash,
		Profile: b.Profile, PolicyVersion: b.PolicyVersion, Link: b.Link, Person: b.Person, NotAfter: b.NotAfter,
		Kind: b.Kind, Node: b.Node, Actor: b.Actor}
}

func intentV2(b intentBody) intentBodyV2 {
	return intentBodyV2{Serial: b.Serial, Issuer: b.Issuer, TBSHash: b.TBSHash,
		Profile: b.Profile, PolicyVersion: b.PolicyVersion, Link: b.Link, Person: b.Person, NotAfter: b.NotAfter,
		Kind: b.Kind, Node: b.Node, Actor: b.Actor, MaxPerPerson: b.MaxPerPerson}
}

func fromV2(v2 intentBodyV2) intentBody {
	return intentBody{Serial: v2.Serial, Issuer: v2.Issuer, TBSHash: v2.TBSHash, Profile: v2.Profile,
		PolicyVersion: v2.PolicyVersion, Link: v2.Link, Person: v2.Person, NotAfter: v2.NotAfter,
		Kind: v2.Kind, Node: v2.Node, Actor: v2.Actor, MaxPerPerson: v2.MaxPerPerson}
}

// decodeIntent decodes an intent of any version.
func decodeIntent(c cluster.Command) (intentBody, error) {
	switch c.Version {
	case 1:
		var v1 intentBodyV1
		if err := c.Decode(&v1); err != nil {
			return intentBody{}, err
		}
		return fromV2(intentBodyV2{Serial: v1.Serial, Issuer: v1.Issuer, TBSHash: v1.TBSHash, Profile: v1.Profile,
			PolicyVersion: v1.PolicyVersion, Link: v1.Link, Person: v1.Person, NotAfter: v1.NotAfter,
			Kind: v1.Kind, Node: v1.Node, Actor: v1.Actor}), nil
	case 2:
		var v2 intentBodyV2
		if err := c.Decode(&v2); err != nil {
			return intentBody{}, err
		}
		return fromV2(v2), nil
	}
	var b intentBody
	err := c.Decode(&b)
	return b, err
}

func applyIntent(tx *bbolt.Tx, e cluster.Entry) ([]byte, error) {
	b, err := decodeIntent(e.Command)
	if err != nil {
		return nil, cluster.Refuse(err)
	}
	if err := prunedNonces(tx, e.Time); err != nil {
		return nil, err
	}
	if err := putIntent(tx, e.Time, &b); err != nil {
		return nil, err
	}
	return result(b.Issuer, b.Serial)
}

// putIntent applies one intent, in a ca.intent command or a ca.intents batch. It
// refuses (cluster.Refuse) before it writes anything, so a refused item of a batch
// leaves no trace without a savepoint.
func putIntent(tx *bbolt.Tx, now time.Time, b *intentBody) error {
	if err := checkActor(b.Actor); err != nil {
		return err
	}
	if !validSerial(b.Serial) || len(b.TBSHash) != sha256.Size || Kind(b.Kind) > TimeStamping ||
		b.MaxPerPerson < 0 || b.MaxPerPerson > 0 && len(b.Person) == 0 {
		return refusef("malformed intent")
	}
	if len(b.Link) > maxLink || len(b.Person) > maxLink || len(b.Hint) > maxLink {
		return refusef("intent %x: link, person or hint too long", b.Serial)
	}
	if tx.Bucket(bucketCerts).Get(b.Serial) != nil {
		return cluster.Refuse(fmt.Errorf("%w: %x", errSerialUsed, b.Serial))
	}
	is, err := readIssuer(tx, b.Issuer)
	if err != nil {
		return err
	}
	// A retired issuer's key still signs responder certificates: its certificates'
	// status is answered until they have all expired.
	if is == nil || issuerStatus(is.Status) != issuerActive && !(issuerStatus(is.Status) == issuerRetired && Kind(b.Kind) == Responder) {
		return refusef("issuer %q is not active", b.Issuer)
	}
	if b.NotAfter > is.NotAfter || b.NotAfter <= now.UnixNano() {
		return refusef("intent %x: notAfter outside the issuer's validity", b.Serial)
	}
	// The nonce and the person record before the cap: a replay, or a request
	// that raced another for the same card, is told so rather than the count.
	if len(b.NonceHash) > 0 || b.NonceExpires != 0 {
		if err := checkNonce(tx, now, b.NonceHash, b.NonceExpires); err != nil {
			return err
		}
	}
	if err := checkPerson(tx, b); err != nil {
		return err
	}
	if b.MaxPerPerson > 0 {
		// The intents applied before this one, in earlier entries and earlier in
		// this batch, are in tx: concurrent requests for one person cannot all pass.
		n, err := Read(tx).CountForCap(b.Person, b.Hint, now)
		if err != nil {
			return err
		}
		if n >= b.MaxPerPerson {
			return cluster.Refuse(fmt.Errorf("%w: %d of %d", ErrPersonLimit, n, b.MaxPerPerson))
		}
	}
	r := &certRecord{Issuer: b.Issuer, Kind: b.Kind, Node: b.Node, Profile: b.Profile, PolicyVersion: b.PolicyVersion,
		TBSHash: b.TBSHash, Link: b.Link, Person: b.Person, NotAfter: b.NotAfter, IntentAt: now.UnixNano(),
		Status: uint8(Pending)}
	if err := putCert(tx, r, b.Serial); err != nil {
		return err
	}
	if err := tx.Bucket(bucketIntents).Put(b.Serial, []byte(b.Issuer)); err != nil {
		return err
	}
	if len(b.Link) > 0 {
		if err := tx.Bucket(bucketLinks).Put(indexKey(b.Link, b.Serial), nil); err != nil {
			return err
		}
	}
	if Kind(b.Kind) == Derived || Kind(b.Kind) == TimeStamping {
		if err := extendHorizon(tx, b.Issuer, b.NotAfter); err != nil {
			return err
		}
	}
	if len(b.Person) > 0 {
		var na [8]byte
		putUint64(na[:], uint64(b.NotAfter))
		if err := tx.Bucket(bucketPersons).Put(indexKey(b.Person, b.Serial), na[:]); err != nil {
			return err
		}
	}
	if len(b.NonceHash) > 0 {
		if err := putNonce(tx, b.NonceHash, b.NonceExpires); err != nil {
			return err
		}
	}
	return putPersonOf(tx, now, b)
}

// tbsOf returns the TBSCertificate of a certificate's DER, without parsing the rest.
func tbsOf(der []byte) ([]byte, bool) {
	in := cryptobyte.String(der)
	var cert, tbs cryptobyte.String
	if !in.ReadASN1(&cert, cbasn1.SEQUENCE) || !in.Empty() || !cert.ReadASN1Element(&tbs, cbasn1.SEQUENCE) {
		return nil, false
	}
	return tbs, true
}

func applyIssue(tx *bbolt.Tx, e cluster.Entry) ([]byte, error) {
	var b issueBody
	if err := e.Command.Decode(&b); err != nil {
		return nil, cluster.Refuse(err)
	}
	issuer, err := putIssued(tx, e.Time, &b)
	if err != nil {
		return nil, err
	}
	return result(issuer, b.Serial)
}

// putIssued records one issued certificate, in a ca.issue command or a ca.issues
// batch, and returns its issuer ID. Like putIntent, it refuses before it writes.
func putIssued(tx *bbolt.Tx, now time.Time, b *issueBody) (string, error) {
	if err := checkActor(b.Actor); err != nil {
		return "", err
	}
	r, err := readCert(tx, b.Serial)
	if err != nil {
		return "", err
	}
	if r == nil || Status(r.Status) != Pending {
		return "", cluster.Refuse(fmt.Errorf("%w: serial %x", errNotPending, b.Serial))
	}
	tbs, ok := tbsOf(b.DER)
	if !ok {
		return "", refusef("issued %x: not a certificate", b.Serial)
	}
	if h := sha256.Sum256(tbs); !bytes.Equal(h[:], r.TBSHash) {
		return "", refusef("issued %x: TBSCertificate differs from the intent's", b.Serial)
	}
	r.DER, r.IssuedAt, r.Status = b.DER, now.UnixNano(), uint8(Good)
	if err := putCert(tx, r, b.Serial); err != nil {
		return "", err
	}
	if err := tx.Bucket(bucketIntents).Delete(b.Serial); err != nil {
		return "", err
	}
	if Kind(r.Kind) == Responder {
		if err := putResponder(tx, r.Node, r.Issuer, b.Serial); err != nil {
			return "", err
		}
	}
	return r.Issuer, nil
}

// maxResolve bounds the serials of one resolve command.
const maxResolve = 1024

func applyResolve(tx *bbolt.Tx, e cluster.Entry) ([]byte, error) {
	var b resolveBody
	if err := e.Command.Decode(&b); err != nil {
		return nil, cluster.Refuse(err)
	}
	if len(b.Serials) > maxResolve {
		return nil, refusef("resolve: more than %d serials", maxResolve)
	}
	var done [][]byte
	for _, s := range b.Serials {
		r, err := readCert(tx, s)
		if err != nil {
			return nil, err
		}
		// An intent issued or resolved meanwhile is left as it is.
		if r == nil || Status(r.Status) != Pending || r.Issuer != b.Issuer {
			continue
		}
		r.Status, r.Reason, r.RevokedAt = uint8(Revoked), uint8(crlreason.CessationOfOperation), e.Time.UnixNano()
		if err := putCert(tx, r, s); err != nil {
			return nil, err
		}
		if err := tx.Bucket(bucketIntents).Delete(s); err != nil {
			return nil, err
		}
		done = append(done, s)
	}
	return result(b.Issuer, done...)
}

// validRevocationReason: the CRLReason codes Revoke takes. certificateHold (6) is
// Hold's, removeFromCRL (8) belongs to delta CRLs, 7 is unassigned.
func validRevocationReason(r int) bool {
	c := crlreason.Reason(r)
	return c.Known() && c != crlreason.CertificateHold && c != crlreason.RemoveFromCRL
}

// decodeStatusCommand decodes a status command of either version (version 1 as
// version 2 with no time and no responses).
func decodeStatusCommand(c cluster.Command) (statusBodyV2, error) {
	if c.Version == 2 {
		var b statusBodyV2
		err := c.Decode(&b)
		return b, err
	}
	var b statusBody
	if err := c.Decode(&b); err != nil {
		return statusBodyV2{}, err
	}
	return statusBodyV2{Serial: b.Serial, Reason: b.Reason, Actor: b.Actor}, nil
}

// statusTime is when a status change takes effect, in Unix nanoseconds: the
// time the leader fixed in the command, so that the state says what the
// responses it signed say, unless that is more than maxClockSkew from the
// entry's time (then the entry's: the responses do not match the state, and
// every node signs its own).
func statusTime(b statusBodyV2, e cluster.Entry) int64 {
	at := e.Time.UnixNano()
	if d := time.Duration(b.At - at); b.At != 0 && d <= maxClockSkew && d >= -maxClockSkew {
		return b.At
	}
	return at
}

func applyStatus(tx *bbolt.Tx, e cluster.Entry, change func(r *certRecord, b statusBodyV2, at int64) error) ([]byte, error) {
	b, err := decodeStatusCommand(e.Command)
	if err != nil {
		return nil, cluster.Refuse(err)
	}
	if err := checkActor(b.Actor); err != nil {
		return nil, err
	}
	r, err := readCert(tx, b.Serial)
	if err != nil {
		return nil, err
	}
	if r == nil {
		return nil, cluster.Refuse(fmt.Errorf("%w: serial %x", ErrNotFound, b.Serial))
	}
	if err := change(r, b, statusTime(b, e)); err != nil {
		return nil, cluster.Refuse(err)
	}
	if err := putCert(tx, r, b.Serial); err != nil {
		return nil, err
	}
	return result(r.Issuer, b.Serial)
}

// changeTo applies a status change to r as the command typ with b says, at
// the time at (Unix nanoseconds), or says why it is refused. The apply and
// the leader signing the new status's responses ahead of it (statusResponses)
// both call it.
func changeTo(typ string, r *certRecord, b statusBodyV2, at int64) error {
	switch typ {
	case commandRevoke:
		if !validRevocationReason(b.Reason) {
			return fmt.Errorf("ca: revoke %x: reason %d not allowed", b.Serial, b.Reason)
		}
		if s := Status(r.Status); s != Good && s != Held {
			return fmt.Errorf("%w: revoke %x: status is %s", ErrStatus, b.Serial, s)
		}
		r.Status, r.Reason, r.RevokedAt, r.HeldBy = uint8(Revoked), uint8(b.Reason), at, ""
	case commandHold:
		if s := Status(r.Status); s != Good {
			return fmt.Errorf("%w: hold %x: status is %s", ErrStatus, b.Serial, s)
		}
		r.Status, r.Reason, r.RevokedAt, r.HeldBy = uint8(Held), uint8(crlreason.CertificateHold), at, b.Actor
	case commandRelease:
		if s := Status(r.Status); s != Held {
			return fmt.Errorf("%w: release %x: status is %s", ErrStatus, b.Serial, s)
		}
		if isOperator(r.HeldBy) && !isOperator(b.Actor) {
			return fmt.Errorf("%w: release %x as %s", ErrHeldByOperator, b.Serial, b.Actor)
		}
		r.Status, r.Reason, r.RevokedAt, r.HeldBy = uint8(Good), 0, 0, ""
	default:
		return fmt.Errorf("ca: %q is not a status change", typ)
	}
	return nil
}

func applyRevoke(tx *bbolt.Tx, e cluster.Entry) ([]byte, error) {
	return applyStatus(tx, e, func(r *certRecord, b statusBodyV2, at int64) error {
		return changeTo(commandRevoke, r, b, at)
	})
}

func applyHold(tx *bbolt.Tx, e cluster.Entry) ([]byte, error) {
	return applyStatus(tx, e, func(r *certRecord, b statusBodyV2, at int64) error {
		return changeTo(commandHold, r, b, at)
	})
}

func applyRelease(tx *bbolt.Tx, e cluster.Entry) ([]byte, error) {
	return applyStatus(tx, e, func(r *certRecord, b statusBodyV2, at int64) error {
		return changeTo(commandRelease, r, b, at)
	})
}

// maxLink bounds a link or person hash (the index keys carry its length in a byte).
const maxLink = 255

// applyRelink points an issued, unexpired derived certificate (good or held) at a
// new link hash, in its record and in the link index.
func applyRelink(tx *bbolt.Tx, e cluster.Entry) ([]byte, error) {
	var b relinkBody
	if err := e.Command.Decode(&b); err != nil {
		return nil, cluster.Refuse(err)
	}
	if err := checkActor(b.Actor); err != nil {
		return nil, err
	}
	if len(b.Link) == 0 || len(b.Link) > maxLink {
		return nil, refusef("relink %x: link hash of %d bytes: want 1-%d", b.Serial, len(b.Link), maxLink)
	}
	r, err := readCert(tx, b.Serial)
	if err != nil {
		return nil, err
	}
	switch {
	case r == nil:
		return nil, cluster.Refuse(fmt.Errorf("%w: serial %x", ErrNotFound, b.Serial))
	case Kind(r.Kind) != Derived:
		return nil, cluster.Refuse(fmt.Errorf("%w: relink %x: not a derived certificate", ErrStatus, b.Serial))
	case Status(r.Status) != Good && Status(r.Status) != Held:
		return nil, cluster.Refuse(fmt.Errorf("%w: relink %x: status is %s", ErrStatus, b.Serial, Status(r.Status)))
	case r.NotAfter <= e.Time.UnixNano():
		return nil, cluster.Refuse(fmt.Errorf("%w: relink %x: the certificate has expired", ErrExpired, b.Serial))
	}
	old := r.Link
	links := tx.Bucket(bucketLinks)
	if len(old) > 0 {
		if err := links.Delete(indexKey(old, b.Serial)); err != nil {
			return nil, err
		}
	}
	if err := links.Put(indexKey(b.Link, b.Serial), nil); err != nil {
		return nil, err
	}
	r.Link = b.Link
	if err := putCert(tx, r, b.Serial); err != nil {
		return nil, err
	}
	// The new JPKI certificate joins the certificate's person record: a re-bind,
	// which the enrolment API verified both halves of.
	if err := bindLink(tx, b.Link, r.Person); err != nil {
		return nil, err
	}
	if old == nil {
		old = []byte{} // a byte string, never null, in the result and the audit log
	}
	return encMode.Marshal(relinkResult{Issuer: r.Issuer, Serials: [][]byte{b.Serial}, OldLink: old})
}

// changedSerials tells a subscriber which issuer and serials an applied command of
// the authority changed, from its result alone. The serials are big-endian
// bytes, as the result carries them, the state keys them and OCSP answers for
// them. It returns "" and nil for other commands and for results it cannot read.
func changedSerials(e cluster.Entry, result []byte) (issuerID string, serials [][]byte) {
	switch e.Command.Type {
	case commandIntent, commandIssue, commandResolve, commandRevoke, commandHold, commandRelease,
		commandIssuerCreate, commandIssuerInstall, commandIssuerRetire:
	case commandRelink, commandIntents, commandIssues:
	default:
		return "", nil
	}
	var r changeResult
	if e.Command.Type == commandIntents || e.Command.Type == commandIssues {
		var br batchResult
		if decMode.Unmarshal(result, &br) != nil {
			return "", nil
		}
		r.Issuer, r.Serials = br.Issuer, br.Serials
	} else if e.Command.Type == commandRelink {
		var rr relinkResult
		if decMode.Unmarshal(result, &rr) != nil {
			return "", nil
		}
		r.Issuer, r.Serials = rr.Issuer, rr.Serials
	} else if decMode.Unmarshal(result, &r) != nil {
		return "", nil
	}
	return r.Issuer, r.Serials
}

func putUint64(b []byte, v uint64) {
	for i := 7; i >= 0; i-- {
		b[i] = byte(v)
		v >>= 8
	}
}
