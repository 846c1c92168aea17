package subscriber

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"syscall"
)

// errUnreachable: a request to the enrollment API got no HTTP answer. The
// *UnreachableError that carries it says why, in words.
var errUnreachable = errors.New("enroll: cannot reach the enrollment API")

// unreachableError is a request that got no HTTP answer: nothing listens at the
// address, the name does not resolve, the connection broke, no answer came in
// time, or the server's TLS certificate is not one the client trusts. Err is the
// transport's error (errors.As finds x509.UnknownAuthorityError and the like in
// it).
type unreachableError struct {
	URL string // the API's base URL, as the client was given it
	Err error
}

func (e *unreachableError) Error() string { return "cannot reach " + e.URL + ": " + why(e.Err) }
func (e *unreachableError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrUnreachable) true.
func (e *unreachableError) Is(target error) bool { return target == errUnreachable }

// why says in words why a request got no answer.
func why(err error) string {
	var (
		dns      *net.DNSError
		record   tls.RecordHeaderError
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
		invalid  x509.CertificateInvalidError
		netErr   net.Error
	)
	switch {
	case errors.Is(err, context.Canceled):
		return "interrupted"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "nothing is listening there (connection refused): is the node running, and is this its API address?"
	case errors.As(err, &dns) && dns.IsNotFound:
		return fmt.Sprintf("there is no host %s", dns.Name)
	case errors.As(err, &dns):
		return fmt.Sprintf("looking up %s failed: %s", dns.Name, dns.Err)
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return "no route to it (host or network unreachable)"
	case errors.As(err, &record):
		return "it does not answer in TLS (is it an http:// address?)"
	case errors.As(err, &unknown):
		return "its TLS certificate is not from a CA this client trusts"
	case errors.As(err, &hostname):
		return fmt.Sprintf("its TLS certificate is not for %s", hostname.Host)
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired:
		return "its TLS certificate has expired or is not valid yet"
	case errors.As(err, &invalid):
		return "its TLS certificate is not valid: " + invalid.Detail
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &netErr) && netErr.Timeout():
		return "no answer in time"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "the connection was closed before an answer came"
	}
	// Something else: the transport's own words, without Go's `Post "URL":`.
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err.Error()
	}
	return err.Error()
}
