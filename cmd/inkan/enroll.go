package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/inkan-pki/inkan/certserial"
	"github.com/inkan-pki/inkan/hsm"
	"github.com/inkan-pki/inkan/subscriber"
)

const (
	envKeyPIN          = "INKAN_KEY_PIN"
	defaultCardModule  = "/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so"
	defaultEnrollLimit = 2 * time.Minute
)

// newEnrollCmd is `inkan enroll`: the subscriber's client of the enrollment API.
func newEnrollCmd() *cobra.Command {
	var (
		url, card, cardModule, cardPINFile      string
		key, keyModule, keyPINFile, out, caFile string
		profile, rebind                         string
		timeout                                 time.Duration
	)
	cmd := &cobra.Command{
		Use:   "enroll --url URL --card PKCS11-URI --key FILE|PKCS11-URI --out cert.pem",
		Short: "Prove My Number Card possession with its JPKI signature key and get a derived certificate",
		Long: `enroll makes (or reuses) the subscriber key, makes a CSR for it, fetches a challenge
from the enrollment API at --url, has the card sign the proof with its JPKI signature
key through PKCS#11, submits both, and writes the certificate chain to --out (PEM).

--card names the card's signature key by RFC 7512 URI; it needs the token and, unless
it is OpenSC's "Digital Signature Key", the object: pkcs11:token=...;object=... The
module is --card-module (OpenSC by default; SoftHSM for a jpki-sim card) or the URI's
module-path. The signature PIN comes from --card-pin-file (mode 0600) or
` + envCardPIN + `, never from the command line. Before logging in, enroll checks that
the PIN has the card's form (6 to 16 upper-case letters and digits: any other
would only cost one of the five tries), and warns when the card reports failed
tries; a locked card is refused without a try.

--key is a file (a P-256 key made with mode 0600 if missing, reused if present; a
file made for a try that gets no certificate is removed) or a PKCS#11 URI with an
object label (the key is made on the token if missing); its token's PIN comes from
--key-pin-file or ` + envKeyPIN + `.

With --rebind SERIAL there is no new key: after a move (or a renewed card) the holder
re-binds the derived certificate SERIAL to the card given by --card, their new one,
and proves both halves: the new card signs (it must be of the same name and date of
birth), and so does the certificate's own key, given by --key (its file or PKCS#11
URI; it must exist: a re-bind with another key is refused, and without the key
there is no re-bind, only a new enrollment). The holder gets the certificate
back: released from hold, or — when its contents must change — a new certificate
for the same key, the old one revoked as superseded. --out receives the
certificate bound now.

A refusal prints the problem type (urn:inkan:problem:…) and why.`,
		Example: `  inkan enroll --url https://ca.example.jp --card 'pkcs11:token=JPKI' --key sub.key --out sub.pem
  inkan enroll --url https://ca.example.jp --card 'pkcs11:token=JPKI' --rebind 5c1e… --key sub.key --out sub.pem`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			switch {
			case rebind != "" && key == "":
				return errors.New("--rebind needs --key: the derived certificate's own key, which signs the re-bind (without it, enroll anew)")
			case url == "" || card == "" || key == "" || out == "":
				return errors.New("give --url, --card, --key and --out")
			}
			var serial *big.Int
			if rebind != "" {
				var err error
				if serial, err = certserial.Parse(rebind); err != nil {
					return fmt.Errorf("--rebind %w", err)
				}
			}
			ctx, cancel := context.WithTimeout(cmdContext(cmd), timeout)
			defer cancel()

			cardURI, err := hsm.ParseURI(card)
			if err != nil {
				return fmt.Errorf("--card: %w", err)
			}
			cardPIN, err := pinSource(cardPINFile, envCardPIN, "card-pin-file")
			if err != nil {
				return err
			}
			if cardURI.ModulePath != "" && !cmd.Flags().Changed("card-module") {
				cardModule = ""
			}
			c, err := subscriber.OpenCard(ctx, subscriber.CardConfig{Module: cardModule, Key: cardURI, PIN: cardPIN,
				Warn: func(m string) { fmt.Fprintln(cmd.ErrOrStderr(), "warning: "+m) }})
			if err != nil {
				return err
			}
			defer c.Close()

			hc, err := apiHTTPClient(caFile, timeout)
			if err != nil {
				return err
			}
			client := &subscriber.Client{BaseURL: url, HTTP: hc}
			w := cmd.OutOrStdout()
			kc := subscriber.KeyConfig{File: key, Existing: serial != nil}
			if strings.HasPrefix(key, "pkcs11:") {
				u, err := hsm.ParseURI(key)
				if err != nil {
					return fmt.Errorf("--key: %w", err)
				}
				pin, err := pinSource(keyPINFile, envKeyPIN, "key-pin-file")
				if err != nil {
					return err
				}
				if u.ModulePath != "" && !cmd.Flags().Changed("key-module") {
					keyModule = ""
				}
				kc = subscriber.KeyConfig{URI: &u, Module: keyModule, PIN: pin, Existing: serial != nil}
			}
			k, err := subscriber.OpenKey(ctx, kc)
			if err != nil {
				return err
			}
			defer k.Close()
			if serial != nil {
				got, err := client.Rebind(ctx, c, k, serial)
				if err != nil {
					return withCAHint(err, caFile)
				}
				if err := os.WriteFile(out, got.Certificate.PEM(), 0o644); err != nil {
					return err
				}
				leaf := got.Certificate.Chain[0]
				if got.Replaced != nil {
					fmt.Fprintf(w, "%s: certificate %s replaces %s (revoked as superseded): %s\n", got.Action, certserial.Format(leaf.SerialNumber), certserial.Format(got.Replaced), out)
				} else {
					fmt.Fprintf(w, "%s: certificate %s is bound to the new card: %s\n", got.Action, certserial.Format(leaf.SerialNumber), out)
				}
				return nil
			}

			cert, err := client.Enroll(ctx, c, k, profile)
			if err != nil {
				// No certificate: a key file made for it goes too, so that a
				// failed try leaves nothing behind.
				if k.Created && kc.File != "" {
					if derr := k.Discard(); derr != nil {
						fmt.Fprintf(cmd.ErrOrStderr(), "warning: %v\n", derr)
					}
				}
				return withCAHint(err, caFile)
			}
			if err := os.WriteFile(out, cert.PEM(), 0o644); err != nil {
				// The certificate is issued: show it rather than lose it.
				w.Write(cert.PEM())
				return fmt.Errorf("--out: %w (the certificate for %s is above)", err, key)
			}
			if k.Created {
				fmt.Fprintf(w, "new key: %s\n", key)
			}
			leaf := cert.Chain[0]
			fmt.Fprintf(w, "certificate %s (%s profile), valid until %s: %s\n", certserial.Format(leaf.SerialNumber), cert.Profile, leaf.NotAfter.UTC().Format(time.RFC3339), out)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&url, "url", "", "the enrollment API's base URL (https://host[:port]); the proof's audience is URL/v1/enroll")
	f.StringVar(&card, "card", "", "PKCS#11 URI of the card's signature key")
	f.StringVar(&cardModule, "card-module", defaultCardModule, "the card's PKCS#11 module")
	f.StringVar(&cardPINFile, "card-pin-file", "", "file holding the card's signature PIN (mode 0600); default $"+envCardPIN)
	f.StringVar(&key, "key", "", "the subscriber key: a PEM file (made if missing) or a PKCS#11 URI; with --rebind, the certificate's existing key")
	f.StringVar(&keyModule, "key-module", defaultHSMModule, "PKCS#11 module of a --key URI")
	f.StringVar(&keyPINFile, "key-pin-file", "", "file holding the --key token's PIN (mode 0600); default $"+envKeyPIN)
	f.StringVar(&out, "out", "", "where to write the certificate chain (PEM)")
	f.StringVar(&caFile, "ca-file", "", "PEM roots to trust for the API's TLS certificate (default: the system's)")
	f.StringVar(&profile, "profile", "", "the profile to ask for (default: the server's)")
	f.StringVar(&rebind, "rebind", "", "re-bind the derived certificate with this serial (as enroll or openssl prints it) to --card, the holder's new card")
	f.DurationVar(&timeout, "timeout", defaultEnrollLimit, "give up after this long")
	return cmd
}

// withCAHint adds what to do when the API's TLS certificate is not trusted.
func withCAHint(err error, caFile string) error {
	var ua x509.UnknownAuthorityError
	if !errors.As(err, &ua) {
		return err
	}
	if caFile == "" {
		return fmt.Errorf("%w; give the CA of the API's certificate with --ca-file (a node's data_dir/cluster-ca.pem)", err)
	}
	return fmt.Errorf("%w; --ca-file %s is not the CA of the API's certificate", err, caFile)
}

// apiHTTPClient is the client of a node's HTTPS API, trusting caFile's roots
// (the system's if empty).
func apiHTTPClient(caFile string, timeout time.Duration) (*http.Client, error) {
	hc := &http.Client{Timeout: timeout}
	if caFile == "" {
		return hc, nil
	}
	pemBytes, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("--ca-file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemBytes) {
		return nil, fmt.Errorf("--ca-file %s: no certificate", caFile)
	}
	hc.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	return hc, nil
}
