package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"gopkg.in/yaml.v3"

	"github.com/inkan-pki/inkan/admin"
)

// rulesFile is the file `inkan admin rules apply` reads (YAML, or JSON).
type rulesFile struct {
	Rules map[string]struct {
		M      int    `yaml:"m"`
		Role   string `yaml:"role"`
		TTL    string `yaml:"ttl"`
		Over   int    `yaml:"over"`
		Within string `yaml:"within"`
	} `yaml:"rules"`
}

func newAdminRulesCmd(f *adminFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "rules",
		Short: "The cluster's rules of dual control: which actions need whose approval",
	}
	show := &cobra.Command{
		Use:     "show",
		Example: `  inkan admin --config /etc/inkan/node.yaml rules show`,
		Short:   "Show the rules of dual control in force (one set for the whole cluster)",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withAdmin(cmd, f, func(ctx context.Context, ac *admin.Client) (any, func(io.Writer), error) {
				r, err := ac.Rules(ctx)
				return r, func(w io.Writer) { printRules(w, r) }, err
			})
		},
	}
	apply := &cobra.Command{
		Use: "apply FILE",
		Example: `  cat > rules.yaml <<'YAML'
  rules:
    cluster.membership: {m: 2, role: admin, ttl: 24h}
    ca.key.transfer:    {m: 2, role: admin, ttl: 24h}
    cert.revoke:        {m: 2, role: officer, ttl: 24h, over: 10, within: 1h}
  YAML
  inkan admin --url https://10.0.0.1:7444 --cacert cluster-ca.pem --cert me.pem --key me.key rules apply rules.yaml`,
		Short: "Replace the rules of dual control (itself under the rule of policy.apply)",
		Long: `apply replaces the cluster's rules of dual control with the file's: every action it names
needs m approvals by other operators of role within ttl; with over, a rule counts an
operator's items (certificates revoked) within the window 'within' (default 1h) and
needs approval once they would pass over. An action the file does not name needs no
approval. The change is a request under the rule of policy.apply in force now, and
the new rules hold on every node at once.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			raw, err := os.ReadFile(args[0])
			if err != nil {
				return err
			}
			var rf rulesFile
			dec := yaml.NewDecoder(bytes.NewReader(raw))
			dec.KnownFields(true)
			if err := dec.Decode(&rf); err != nil {
				return fmt.Errorf("%s: %w", args[0], err)
			}
			if rf.Rules == nil {
				return fmt.Errorf("%s: rules: required (an empty map turns dual control off: write `rules: {}`)", args[0])
			}
			specs := map[string]admin.RuleSpec{}
			for a, r := range rf.Rules {
				specs[a] = admin.RuleSpec{M: r.M, Role: r.Role, TTL: r.TTL, Over: r.Over, Within: r.Within}
			}
			return withAdmin(cmd, f, func(ctx context.Context, ac *admin.Client) (any, func(io.Writer), error) {
				r, err := ac.SetRules(ctx, specs)
				return r, func(w io.Writer) { printRules(w, r) }, err
			})
		},
	}
	cmd.AddCommand(show, apply)
	return cmd
}

func printRules(w io.Writer, r *admin.Rules) {
	fmt.Fprintf(w, "rules of dual control, version %d\n\n", r.Version)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ACTION\tAPPROVALS\tTTL\tOVER\tWITHIN")
	actions := make([]string, 0, len(r.Rules))
	for a := range r.Rules {
		actions = append(actions, a)
	}
	slices.Sort(actions)
	for _, a := range actions {
		s := r.Rules[a]
		over, within := "-", "-"
		if s.Over > 0 {
			over, within = fmt.Sprint(s.Over), s.Within
		}
		fmt.Fprintf(tw, "%s\t%d %s\t%s\t%s\t%s\n", a, s.M, s.Role, s.TTL, over, within)
	}
	tw.Flush()
}
