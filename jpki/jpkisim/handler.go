package jpkisim

import (
	"bytes"
	"context"
	"encoding/pem"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"
)

// Handler serves the sim's publications over HTTP, as a platform operator would
// relay J-LIS's: GET /crl is the latest CRL (DER, application/pkix-crl) and
// GET /root.pem the root certificate. It serves what PublishCRL last wrote (404 until
// a CRL is published); keeping the CRL fresh is the caller's job (Refresh).
func (s *Sim) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /crl", func(w http.ResponseWriter, r *http.Request) {
		f, err := os.Open(s.CRLPath())
		if err != nil {
			http.Error(w, "no CRL published yet", http.StatusNotFound)
			return
		}
		defer f.Close()
		fi, err := f.Stat()
		if err != nil {
			http.Error(w, "CRL unreadable", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/pkix-crl")
		w.Header().Set("Cache-Control", "no-cache")
		http.ServeContent(w, r, crlFile, fi.ModTime(), f)
	})
	root := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.root.Raw})
	mux.HandleFunc("GET /root.pem", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-pem-file")
		http.ServeContent(w, r, rootFile, time.Time{}, bytes.NewReader(root))
	})
	return mux
}

// ServeCRL serves Handler on l until ctx ends, publishing a new CRL whenever the state
// changed (a revoke by another process) or the last CRL's thisUpdate is older than
// maxAge (DefaultCRLValidity/2 if 0), checking every few seconds, so the CRL it
// serves is never past its nextUpdate while it runs.
func (s *Sim) ServeCRL(ctx context.Context, l net.Listener, maxAge time.Duration) error {
	if maxAge <= 0 {
		maxAge = defaultCRLValidity / 2
	}
	if _, err := s.Refresh(maxAge); err != nil {
		return err
	}
	srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	every := s.refreshCheck
	if every <= 0 {
		every = refreshCheck
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
			if _, err := s.Refresh(maxAge); err != nil {
				slog.Error("jpkisim: CRL not refreshed", "err", err)
			}
		case err := <-done:
			return err
		case <-ctx.Done():
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = srv.Shutdown(sctx)
			return nil
		}
	}
}

// refreshCheck is how often ServeCRL looks for changes.
const refreshCheck = 2 * time.Second
