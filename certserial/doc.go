// Package certserial is how inkan writes and reads a certificate's serial number,
// the one spelling every command, log line, error and API uses. The printed form
// (Format) is the lower-case hex of the serial's big-endian bytes, two digits a
// byte with no leading zero byte: "0d0a5908…" — what `openssl x509 -noout -serial`
// prints, in lower case. Parse reads what people paste: that form in any case,
// with or without the zero byte DER puts before a serial whose top bit is set,
// with colons between the bytes as `openssl x509 -text` shows them, with a 0x
// prefix, or with an odd number of digits (the audit log's own leaf encoding and
// older releases' output). Anything else is refused with ErrInvalid and the reason.
// Invariants: Parse(Format(n)) == n for every positive serial of at most 20
// bytes (RFC 5280), and Parse accepts nothing that is not one.
package certserial
