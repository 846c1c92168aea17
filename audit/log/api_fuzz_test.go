package log

import (
	"crypto/x509"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"

	"github.com/inkan-pki/inkan/cluster"
	"go.etcd.io/bbolt"
)

// The audit API's wire form, as docs/audit.md gives it (the API is package
// audit's; these tests read it as an auditor's own code would).
const (
	contentJSON    = "application/json"
	contentProblem = "application/problem+json"
	problemBase    = "urn:inkan:problem:audit:"
)

// apiProblem is an audit API error's body (RFC 9457).
type apiProblem struct {
	Type   string `json:"type"`
	Status int    `json:"status"`
}

// apiFixture is a log of 40 leaves with two checkpoints in a bare bbolt file (a
// *bbolt.DB is a Viewer), for testing the API without a cluster.
func apiFixture(t testing.TB) (*Service, *bbolt.DB) {
	t.Helper()
	s := newTestService(t, nil)
	db := newDB(t)
	key := newKey(t)
	der, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bbolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		if err := b.Put(keyPub, der); err != nil {
			return err
		}
		l, err := s.logIn(tx)
		if err != nil {
			return err
		}
		for i := range uint64(40) {
			cmd, err := cluster.NewCommand(cmdTest, 1, testBody{N: i % 7})
			if err != nil {
				return err
			}
			if err := s.hook(tx, cluster.Entry{Index: i + 1, Time: testTime, Command: cmd}, nil); err != nil {
				return err
			}
			if i == 15 || i == 39 {
				if _, err := l.signCheckpoint(tx, key, testTime); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return s, db
}

// FuzzAPI: whatever the path and query, the API answers JSON (or the PEM key) or a
// problem, never a panic or a bare error.
func FuzzAPI(f *testing.F) {
	for _, seed := range []string{
		"/v1/audit/key", "/v1/audit/checkpoint", "/v1/audit/checkpoints?from=3", "/v1/audit/checkpoints/16",
		"/v1/audit/leaves?from=0&to=40", "/v1/audit/leaves?from=39&to=18446744073709551615",
		"/v1/audit/range?size=17", "/v1/audit/proof/inclusion?index=3&size=16",
		"/v1/audit/proof/consistency?from=0&to=40", "/v1/audit/proof/consistency?from=16&to=16",
		"/v1/audit/serials/0x06", "/v1/audit/serials/", "/v1/audit/leaves?from=-1&to=2",
	} {
		f.Add(seed)
	}
	s, db := apiFixture(f)
	h := s.API(db)
	f.Fuzz(func(t *testing.T, target string) {
		u, err := url.ParseRequestURI(target)
		if err != nil {
			return
		}
		r := &http.Request{Method: http.MethodGet, URL: u, Header: http.Header{}}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r.WithContext(t.Context()))
		ct := w.Header().Get("Content-Type")
		switch {
		case w.Code == http.StatusOK && (ct == contentJSON || ct == "application/x-pem-file"):
		case w.Code != http.StatusOK && ct == contentProblem:
			var p apiProblem
			if err := json.Unmarshal(w.Body.Bytes(), &p); err != nil || p.Status != w.Code || p.Type == "" {
				t.Fatalf("%s: problem %q: %v", target, w.Body.String(), err)
			}
			if p.Type == problemBase+"unavailable" {
				t.Fatalf("%s: a request made the API fail: %s", target, w.Body.String())
			}
		default:
			t.Fatalf("%s: status %d, %s", target, w.Code, ct)
		}
	})
}

// Before the first leader records the audit key, every endpoint answers 503
// no-key (the snapshot has no key), not unavailable.
func TestAPINoKey(t *testing.T) {
	s := newTestService(t, nil)
	h := s.API(newDB(t))
	for _, target := range []string{"/v1/audit/key", "/v1/audit/checkpoint", "/v1/audit/leaves?from=0&to=1"} {
		u, _ := url.ParseRequestURI(target)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, (&http.Request{Method: http.MethodGet, URL: u, Header: http.Header{}}).WithContext(t.Context()))
		var p apiProblem
		if w.Code != http.StatusServiceUnavailable || json.Unmarshal(w.Body.Bytes(), &p) != nil || p.Type != problemBase+"no-key" {
			t.Errorf("%s: %d %s", target, w.Code, w.Body.String())
		}
	}
}
