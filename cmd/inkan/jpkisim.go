package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/inkan-pki/inkan/certserial"
	"github.com/inkan-pki/inkan/crlreason"
	"github.com/inkan-pki/inkan/hsm"
	"github.com/inkan-pki/inkan/jpki"
	"github.com/inkan-pki/inkan/jpki/jpkisim"
)

const (
	envCardPIN     = "INKAN_CARD_PIN"
	defaultSimDir  = ".inkan-jlis"
	jpkiSimWarning = "jpki-sim is a stand-in J-LIS for tests and the demo: nothing it issues is a real JPKI certificate."
)

// newJPKISimCmd is `inkan jpki-sim`: the stand-in J-LIS of the demo. Its state (root,
// issued cards, revocations, CRL number, latest CRL) lives in one directory.
func newJPKISimCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "jpki-sim",
		Short: "A stand-in J-LIS for tests and the demo: test root, cards in PKCS#11 tokens, CRLs",
		Long: jpkiSimWarning + `

init makes the root (the anchor a node trusts: DIR/root.pem); issue-card makes a
PKCS#11 token a card (the key generated inside it, the certificate stored beside it);
revoke revokes with a J-LIS reason and publishes a CRL (DIR/crl.der); serve-crl
serves the CRL and the root over HTTP and keeps the CRL fresh.`,
	}
	cmd.PersistentFlags().String("dir", defaultSimDir, "the sim's state directory")
	cmd.AddCommand(newJPKISimInitCmd(), newJPKISimIssueCmd(), newJPKISimRevokeCmd(), newJPKISimServeCmd(), newJPKISimListCmd())
	return cmd
}

func simDir(cmd *cobra.Command) string {
	d, _ := cmd.Flags().GetString("dir")
	return d
}

func openSim(cmd *cobra.Command) (*jpkisim.Sim, error) {
	return jpkisim.Open(jpkisim.Config{Dir: simDir(cmd)})
}

func newJPKISimInitCmd() *cobra.Command {
	var years int
	cmd := &cobra.Command{
		Use:     "init",
		Example: `  inkan jpki-sim --dir .inkan-jlis init`,
		Short:   "Make the state directory and a root with the J-LIS signature CA's DN",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if years < 1 || years > 30 {
				return fmt.Errorf("--validity-years %d: between 1 and 30", years)
			}
			now := time.Now().UTC().Truncate(time.Second)
			sim, err := jpkisim.Init(jpkisim.Config{Dir: simDir(cmd), RootNotBefore: now.Add(-time.Hour), RootNotAfter: now.AddDate(years, 0, 0)})
			if err != nil {
				return err
			}
			if _, err := sim.PublishCRL(time.Time{}, time.Time{}); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintln(out, jpkiSimWarning)
			fmt.Fprintf(out, "root (the anchor to configure): %s\n", sim.RootPath())
			fmt.Fprintf(out, "CRL: %s\n", sim.CRLPath())
			return nil
		},
	}
	cmd.Flags().IntVar(&years, "validity-years", 10, "the root's validity in years (a J-LIS generation's is 10)")
	return cmd
}

func newJPKISimIssueCmd() *cobra.Command {
	demo := jpkisim.DemoPerson()
	var (
		module, token, pinFile, policy, reissue, birth string
		p                                              jpkisim.Person
		gender                                         int
	)
	cmd := &cobra.Command{
		Use:     "issue-card --module M --token LABEL",
		Example: `  inkan jpki-sim issue-card --token card1 --pin-file card.pin --name "印鑑　太郎" --birth 1985-05-05`,
		Short:   "Make a PKCS#11 token a card: key generated inside it, signature certificate beside it",
		Long: `issue-card generates the card's RSA-2048 key inside the token (initialise one first:
inkan hsm init-token), issues the signature certificate with the JPKI profile, and
stores it on the token beside the key, as OpenSC presents a real My Number Card. The
basic-4 information comes from the flags (a fictitious demo person by default).

With --reissue-of SERIAL the card is re-issued to the person of that certificate, with
only the flags given changed (a move: --address, --prefecture, --municipality); the
token's old key and certificate are replaced and the old certificate is revoked with
affiliationChanged. The user PIN comes from --pin-file (mode 0600) or ` + envCardPIN + `.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if token == "" {
				return fmt.Errorf("give --token")
			}
			pin, err := pinSource(pinFile, envCardPIN, "pin-file")
			if err != nil {
				return err
			}
			sim, err := openSim(cmd)
			if err != nil {
				return err
			}
			ctx := cmdContext(cmd)
			cfg := hsm.Config{Module: module, Token: token, PIN: pin, Sessions: 1}
			changed := cmd.Flags().Changed
			if birth != "" && (reissue == "" || changed("birth")) {
				if p.Birth, err = parseBirth(birth); err != nil {
					return err
				}
			}
			p.Gender = jpki.Gender(gender)
			switch policy {
			case "test":
				policy = jpki.PolicyTest
			case "production":
				policy = jpki.PolicyProduction
			default:
				return fmt.Errorf("--policy %q: test or production", policy)
			}

			var card *jpkisim.Card
			if reissue != "" {
				serial, err := certserial.Parse(reissue)
				if err != nil {
					return fmt.Errorf("--reissue-of %w", err)
				}
				card, err = sim.Reissue(ctx, cfg, serial, func(old *jpkisim.Person) {
					for flag, apply := range map[string]func(){
						"name":         func() { old.Name = p.Name },
						"name-map":     func() { old.NameSubstitutes = p.NameSubstitutes },
						"gender":       func() { old.Gender = p.Gender },
						"birth":        func() { old.Birth = p.Birth },
						"address":      func() { old.Address, old.AddressSubstitutes = p.Address, p.AddressSubstitutes },
						"address-map":  func() { old.AddressSubstitutes = p.AddressSubstitutes },
						"prefecture":   func() { old.Prefecture = p.Prefecture },
						"municipality": func() { old.Municipality = p.Municipality },
					} {
						if changed(flag) {
							apply()
						}
					}
				})
				if err != nil {
					return err
				}
			} else {
				card, err = sim.IssueCard(ctx, cfg, jpkisim.CardSpec{Person: p, Policy: policy})
				if err != nil {
					return err
				}
			}
			if _, err := sim.PublishCRL(time.Time{}, time.Time{}); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "card issued: serial %s\n", certserial.Format(card.Serial))
			fmt.Fprintf(out, "card key: %s\n", card.Key)
			if reissue != "" {
				fmt.Fprintf(out, "certificate %s revoked (affiliationChanged); CRL published\n", strings.ToLower(strings.TrimPrefix(reissue, "0x")))
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&module, "module", defaultHSMModule, "the card's PKCS#11 module")
	f.StringVar(&token, "token", "", "label of the token that becomes the card")
	f.StringVar(&pinFile, "pin-file", "", "file holding the token's user PIN (mode 0600); default $"+envCardPIN)
	f.StringVar(&policy, "policy", "test", "certificate policy: test (JPKI test cards' OID) or production")
	f.StringVar(&reissue, "reissue-of", "", "re-issue to the person of this certificate (serial in hex), revoking it")
	f.StringVar(&p.Name, "name", demo.Name, "name (氏名): family and given name, a full-width space between")
	f.StringVar(&p.NameSubstitutes, "name-map", "", "name substitute-character map (default: all 0)")
	f.IntVar(&gender, "gender", int(demo.Gender), "gender: 1 male, 2 female, 3 unknown")
	f.StringVar(&birth, "birth", fmt.Sprintf("%04d-%02d-%02d", demo.Birth.Year, demo.Birth.Month, demo.Birth.Day), "date of birth, YYYY-MM-DD (the era digit is derived)")
	f.StringVar(&p.Address, "address", demo.Address, "address (住所)")
	f.StringVar(&p.AddressSubstitutes, "address-map", "", "address substitute-character map (default: all 0)")
	f.StringVar(&p.Prefecture, "prefecture", demo.Prefecture, "prefecture of the address (subject L, CRLDP OU)")
	f.StringVar(&p.Municipality, "municipality", demo.Municipality, "municipality of the address (subject L, CRLDP CN)")
	return cmd
}

func newJPKISimRevokeCmd() *cobra.Command {
	var serial, reason string
	cmd := &cobra.Command{
		Use:     "revoke --serial HEX --reason R",
		Example: `  inkan jpki-sim revoke --serial 25de90992a548388 --reason affiliationChanged`,
		Short:   "Revoke a card's certificate with a J-LIS reason and publish a CRL",
		Long: "Reasons: " + strings.Join(reasonNames(), ", ") + ` (also "move" for affiliationChanged
and "hold" for certificateHold, which J-LIS never lifts).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := certserial.Parse(serial)
			if err != nil {
				return fmt.Errorf("--serial %w", err)
			}
			r, err := parseReason(reason)
			if err != nil {
				return err
			}
			sim, err := openSim(cmd)
			if err != nil {
				return err
			}
			if err := sim.Revoke(s, r, time.Time{}); err != nil {
				return err
			}
			if _, err := sim.PublishCRL(time.Time{}, time.Time{}); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "revoked %s (%s); CRL published: %s\n", certserial.Format(s), r, sim.CRLPath())
			return nil
		},
	}
	cmd.Flags().StringVar(&serial, "serial", "", "the certificate's serial in hex")
	cmd.Flags().StringVar(&reason, "reason", "", "the revocation reason")
	return cmd
}

func newJPKISimServeCmd() *cobra.Command {
	var listen string
	var maxAge time.Duration
	cmd := &cobra.Command{
		Use:     "serve-crl",
		Example: `  inkan jpki-sim serve-crl --listen 127.0.0.1:8081`,
		Short:   "Serve the CRL (GET /crl) and the root (GET /root.pem) over HTTP, keeping the CRL fresh",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			sim, err := openSim(cmd)
			if err != nil {
				return err
			}
			l, err := net.Listen("tcp", listen)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmdContext(cmd), os.Interrupt, syscall.SIGTERM)
			defer stop()
			fmt.Fprintf(cmd.OutOrStdout(), "serving http://%s/crl and http://%s/root.pem\n", l.Addr(), l.Addr())
			return sim.ServeCRL(ctx, l, maxAge)
		},
	}
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:8081", "address to listen on")
	cmd.Flags().DurationVar(&maxAge, "refresh", 12*time.Hour, "publish a new CRL when the last is older than this (and at once after a change)")
	return cmd
}

func newJPKISimListCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Example: `  inkan jpki-sim list`,
		Short:   "List the certificates the sim issued and their status",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			sim, err := openSim(cmd)
			if err != nil {
				return err
			}
			issued, err := sim.Issued()
			if err != nil {
				return err
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			defer w.Flush()
			fmt.Fprintln(w, "SERIAL\tTOKEN\tISSUED\tSTATUS")
			for _, c := range issued {
				status := "good"
				if c.Revoked {
					status = "revoked (" + c.Reason.String() + ")"
				}
				tok := c.Token
				if tok == "" {
					tok = "-"
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", certserial.Format(c.Serial), tok, c.IssuedAt.Format(time.RFC3339), status)
			}
			return nil
		},
	}
}

func reasonNames() []string {
	var out []string
	for r := crlreason.Unspecified; r <= crlreason.CertificateHold; r++ {
		out = append(out, r.String())
	}
	return out
}

func parseReason(s string) (crlreason.Reason, error) {
	switch strings.ToLower(s) {
	case "move":
		return crlreason.AffiliationChanged, nil
	case "hold":
		return crlreason.CertificateHold, nil
	}
	for r := crlreason.Unspecified; r <= crlreason.CertificateHold; r++ {
		if strings.EqualFold(r.String(), s) {
			return r, nil
		}
	}
	return 0, fmt.Errorf("--reason %q: one of %s", s, strings.Join(reasonNames(), ", "))
}

func parseBirth(s string) (jpki.DateOfBirth, error) {
	t, err := time.Parse("2006-01-02", s)
	if err != nil {
		return jpki.DateOfBirth{}, fmt.Errorf("--birth %q: want YYYY-MM-DD", s)
	}
	return jpki.BirthDate(t.Year(), t.Month(), t.Day()), nil
}

func cmdContext(cmd *cobra.Command) context.Context {
	if ctx := cmd.Context(); ctx != nil {
		return ctx
	}
	return context.Background()
}
