package subscriber

import (
	"context"
	"crypto/x509"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// closedAddr is a loopback address nothing listens on (a port free a moment ago).
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// TestClientCannotReach: a request that gets no HTTP answer is ErrUnreachable and
// says why in words, naming the URL it was given.
func TestClientCannotReach(t *testing.T) {
	tlsSrv := httptest.NewTLSServer(http.NotFoundHandler())
	defer tlsSrv.Close()
	plainSrv := httptest.NewServer(http.NotFoundHandler())
	defer plainSrv.Close()
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	}))
	defer hang.Close()
	for _, c := range []struct {
		name, url string
		timeout   time.Duration
		says      string
		as        any // an error type the chain must hold, or nil
	}{
		{"nothing listening", "https://" + closedAddr(t), 0, "nothing is listening there (connection refused)", nil},
		{"certificate not trusted", tlsSrv.URL, 0, "its TLS certificate is not from a CA this client trusts", &x509.UnknownAuthorityError{}},
		{"http, not https", "https://" + strings.TrimPrefix(plainSrv.URL, "http://"), 0, "http: server gave HTTP response to HTTPS client", nil},
		{"no answer in time", hang.URL, 200 * time.Millisecond, "no answer in time", nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			cl := &Client{BaseURL: c.url, HTTP: &http.Client{Timeout: c.timeout}}
			_, _, err := cl.Challenge(context.Background())
			if !errors.Is(err, errUnreachable) {
				t.Fatalf("error %v is not ErrUnreachable", err)
			}
			want := "cannot reach " + c.url + ": " + c.says
			if !strings.HasPrefix(err.Error(), want) {
				t.Fatalf("error %q\nwant %q…", err, want)
			}
			if strings.Contains(err.Error(), "dial tcp") || strings.Contains(err.Error(), `Post "`) {
				t.Fatalf("error %q shows Go's words", err)
			}
			if c.as != nil {
				if ua, ok := c.as.(*x509.UnknownAuthorityError); ok && !errors.As(err, ua) {
					t.Fatalf("error %v does not hold %T", err, c.as)
				}
			}
		})
	}
}

// TestDiscardRemovesOnlyANewKey: Discard removes the file this open made, and
// keeps a key that was there before.
func TestDiscardRemovesOnlyANewKey(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "new.key")
	k, err := OpenKey(ctx, KeyConfig{File: path})
	if err != nil || !k.Created {
		t.Fatalf("open: %v", err)
	}
	if err := k.Discard(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the new key is still there: %v", err)
	}

	kept := filepath.Join(t.TempDir(), "kept.key")
	if _, err := OpenKey(ctx, KeyConfig{File: kept}); err != nil {
		t.Fatal(err)
	}
	again, err := OpenKey(ctx, KeyConfig{File: kept})
	if err != nil || again.Created {
		t.Fatalf("reopen: %v", err)
	}
	if err := again.Discard(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(kept); err != nil {
		t.Fatalf("a key that existed before was removed: %v", err)
	}
}
