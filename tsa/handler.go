package tsa

import (
	"errors"
	"io"
	"mime"
	"net/http"
	"strconv"
)

// Path is where a node serves RFC 3161 over HTTP (§3.4): POST a DER
// TimeStampReq as application/timestamp-query, get a DER TimeStampResp as
// application/timestamp-reply.
const Path = "/tsa"

// Media types of RFC 3161 §3.4.
const (
	contentTypeQuery = "application/timestamp-query"
	contentTypeReply = "application/timestamp-reply"
)

// ServeHTTP serves Path. A request that reaches the TSA is answered 200 with a
// TimeStampResp, granted or rejected (the failure info says why); one that
// does not speak the protocol gets the HTTP status that says so — 405 for
// another method, 415 for another media type, 413 for a body over
// MaxRequestSize — with a rejection (badRequest, or badDataFormat for the
// size) as its body all the same.
func (s *Service) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		s.reject(w, http.StatusMethodNotAllowed, failf(badRequest, "%s: POST a TimeStampReq", r.Method))
		return
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != contentTypeQuery {
		s.reject(w, http.StatusUnsupportedMediaType, failf(badRequest, "Content-Type %q: send %s", r.Header.Get("Content-Type"), contentTypeQuery))
		return
	}
	if r.ContentLength > maxRequestSize {
		s.reject(w, http.StatusRequestEntityTooLarge, failf(badDataFormat, "the request has more than %d bytes", maxRequestSize))
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxRequestSize))
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		s.reject(w, http.StatusRequestEntityTooLarge, failf(badDataFormat, "the request has more than %d bytes", maxRequestSize))
		return
	case err != nil:
		s.reject(w, http.StatusBadRequest, failf(badDataFormat, "the request body could not be read"))
		return
	}
	resp, _ := s.respond(r.Context(), body)
	writeReply(w, http.StatusOK, resp)
}

// reject answers a request that did not reach respond, and counts it.
func (s *Service) reject(w http.ResponseWriter, status int, f *failure) {
	s.refused.WithLabelValues(f.Info.String()).Inc()
	writeReply(w, status, rejection(f))
}

func writeReply(w http.ResponseWriter, status int, body []byte) {
	h := w.Header()
	h.Set("Content-Type", contentTypeReply)
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}
