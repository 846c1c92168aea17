package node

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/inkan-pki/inkan/enrollapi"
)

// TestAPIUnknownPath: a path no service registered on the API listener is
// answered as a problem (404, not-found), as every refusal of the API is, and
// a registered one reaches its service.
func TestAPIUnknownPath(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc(enrollapi.PathChallenge, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusTeapot) })
	srv := httptest.NewServer(apiHandler(mux))
	defer srv.Close()

	for _, c := range []struct {
		method, path string
		status       int
		want         string
	}{
		{http.MethodPost, "/v1/nope", http.StatusNotFound, "not-found"},
		{http.MethodGet, "/", http.StatusNotFound, "not-found"},
		{http.MethodPost, enrollapi.PathChallenge, http.StatusTeapot, ""},
	} {
		req, err := http.NewRequest(c.method, srv.URL+c.path, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var p enrollapi.Problem
		if c.want != "" {
			if err := json.NewDecoder(resp.Body).Decode(&p); err != nil || p.Name() != c.want || resp.Header.Get("Content-Type") != "application/problem+json" {
				t.Errorf("%s %s: %s %+v (%v), want problem %s", c.method, c.path, resp.Header.Get("Content-Type"), p, err, c.want)
			}
		}
		resp.Body.Close()
		if resp.StatusCode != c.status {
			t.Errorf("%s %s: status %d, want %d", c.method, c.path, resp.StatusCode, c.status)
		}
	}
}
