package jpkisim

import (
	"bytes"
	"encoding/pem"
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
		http.ServeContent(w, r, CRLFile, fi.ModTime(), f)
	})
	root := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.root.Raw})
	mux.HandleFunc("GET /root.pem", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-pem-file")
		http.ServeContent(w, r, RootFile, time.Time{}, bytes.NewReader(root))
	})
	return mux
}
