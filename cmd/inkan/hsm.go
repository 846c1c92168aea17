package main

import (
	"context"
	"encoding/hex"
	"fmt"
	"os"
	"strconv"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/inkan-pki/inkan/hsm"
)

const (
	defaultHSMModule = "/usr/lib/softhsm/libsofthsm2.so"
	envHSMPIN        = "INKAN_HSM_PIN"
	envHSMSOPIN      = "INKAN_HSM_SO_PIN"
)

func newHSMCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "hsm",
		Short: "Inspect and prepare PKCS#11 tokens",
	}
	cmd.AddCommand(newHSMListCmd(), newHSMInitTokenCmd())
	return cmd
}

// pinSource picks the PIN file if given, else the environment variable.
func pinSource(file, env, flag string) (hsm.PINSource, error) {
	if file != "" {
		return hsm.PINFile(file), nil
	}
	if os.Getenv(env) != "" {
		return hsm.PINEnv(env), nil
	}
	return hsm.PINSource{}, fmt.Errorf("give --%s or set %s", flag, env)
}

func newHSMListCmd() *cobra.Command {
	var module, token, pinFile string
	cmd := &cobra.Command{
		Use: "list",
		Example: `  inkan hsm list
  inkan hsm list --token inkan-node1 --pin-file /etc/inkan/hsm.pin`,
		Short: "List the module's tokens, or with --token the key objects on one",
		Long: "List the tokens (slots) of a PKCS#11 module. With --token and a PIN (--pin-file,\n" +
			"a file of mode 0600, or " + envHSMPIN + "), list that token's key objects instead.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			defer w.Flush()
			if token == "" {
				toks, err := hsm.ListTokens(module)
				if err != nil {
					return err
				}
				fmt.Fprintln(w, "SLOT\tLABEL\tSERIAL\tMANUFACTURER\tMODEL\tINITIALISED")
				for _, t := range toks {
					fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\t%s\n", t.Slot, t.Label, t.Serial, t.Manufacturer, t.Model, strconv.FormatBool(t.Initialized))
				}
				return nil
			}
			pin, err := pinSource(pinFile, envHSMPIN, "pin-file")
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			if ctx == nil {
				ctx = context.Background()
			}
			tok, err := hsm.Open(ctx, hsm.Config{Module: module, Token: token, PIN: pin, Sessions: 1})
			if err != nil {
				return err
			}
			defer tok.Close()
			keys, err := tok.Keys(ctx)
			if err != nil {
				return err
			}
			fmt.Fprintln(w, "LABEL\tID\tTYPE\tCLASS\tURI")
			for _, k := range keys {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", k.Label, hex.EncodeToString(k.ID), k.Type, k.Class, k.URI)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&module, "module", defaultHSMModule, "path of the PKCS#11 module")
	cmd.Flags().StringVar(&token, "token", "", "label of the token whose keys to list")
	cmd.Flags().StringVar(&pinFile, "pin-file", "", "file holding the user PIN (mode 0600); default $"+envHSMPIN)
	return cmd
}

func newHSMInitTokenCmd() *cobra.Command {
	var module, label, soPINFile, pinFile string
	cmd := &cobra.Command{
		Use:     "init-token",
		Example: `  inkan hsm init-token --label inkan-node1 --so-pin-file so.pin --pin-file /etc/inkan/hsm.pin`,
		Short:   "Initialise a token in a free slot with an SO PIN and a user PIN",
		Long: "Initialise the first uninitialised token of the module with a label, an SO PIN\n" +
			"(--so-pin-file or " + envHSMSOPIN + ") and a user PIN (--pin-file or " + envHSMPIN + ").\n" +
			"PIN files must be of mode 0600. A label already in use is refused.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if label == "" {
				return fmt.Errorf("give --label")
			}
			so, err := pinSource(soPINFile, envHSMSOPIN, "so-pin-file")
			if err != nil {
				return err
			}
			user, err := pinSource(pinFile, envHSMPIN, "pin-file")
			if err != nil {
				return err
			}
			t, err := hsm.InitToken(module, label, so, user)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "initialised token %q (serial %s) in slot %d\n", t.Label, t.Serial, t.Slot)
			return nil
		},
	}
	cmd.Flags().StringVar(&module, "module", defaultHSMModule, "path of the PKCS#11 module")
	cmd.Flags().StringVar(&label, "label", "", "label of the new token (at most 32 bytes)")
	cmd.Flags().StringVar(&soPINFile, "so-pin-file", "", "file holding the SO PIN (mode 0600); default $"+envHSMSOPIN)
	cmd.Flags().StringVar(&pinFile, "pin-file", "", "file holding the user PIN (mode 0600); default $"+envHSMPIN)
	return cmd
}
