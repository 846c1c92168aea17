package ca

import (
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/inkan-pki/inkan/cluster"
)

// TestAuditDocNamesEveryLeaf: every leaf the authority writes, with every data key
// it can carry, is in docs/audit.md's tables, where an auditor who verifies the
// log without inkan reads what each leaf holds. A new leaf type or data key that
// is not documented fails here (issue 19 found cert.intent's and
// cert.intent.resolved's leaves missing, and person_mode and
// cert.person.migrated went the same way after).
func TestAuditDocNamesEveryLeaf(t *testing.T) {
	raw, err := os.ReadFile("../docs/audit.md")
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string]string{} // leaf type → its table row
	for _, line := range strings.Split(string(raw), "\n") {
		cells := strings.Split(line, "|")
		if len(cells) < 3 || !strings.HasPrefix(line, "| `") {
			continue
		}
		for _, f := range strings.Split(cells[1], ",") {
			if typ := strings.Trim(strings.TrimSpace(f), "`"); typ != "" {
				rows[typ] = line
			}
		}
	}

	must := func(c cluster.Command, err error) cluster.Command {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	enc := func(v any) []byte {
		t.Helper()
		b, err := encMode.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	one := []byte{1}
	changed := enc(changeResult{Issuer: "ca-x", Serials: [][]byte{one}})
	// Each command with every optional field set, so that every key shows.
	for _, c := range []struct {
		name   string
		cmd    cluster.Command
		result []byte
	}{
		{"intent", must(intentCommand(intentBody{Serial: one, Issuer: "ca-x", TBSHash: one, Profile: "authentication", PolicyVersion: 2,
			Link: one, Person: one, NotAfter: 1, Node: "node1", Actor: actorEnrollment, MaxPerPerson: 5, PersonMode: uint8(PersonNew), NameBirth: one})), changed},
		{"issue", must(cluster.NewCommand(commandIssue, 1, issueBody{Serial: one, DER: one, Actor: actorEnrollment})), changed},
		{"resolve", must(cluster.NewCommand(commandResolve, 1, resolveBody{Issuer: "ca-x", Serials: [][]byte{one}})), changed},
		{"revoke", must(cluster.NewCommand(commandRevoke, 2, statusBodyV2{Serial: one, Reason: 1, Actor: actorSystem})), changed},
		{"hold", must(cluster.NewCommand(commandHold, 2, statusBodyV2{Serial: one, Actor: actorSystem})), changed},
		{"release", must(cluster.NewCommand(commandRelease, 2, statusBodyV2{Serial: one, Actor: actorSystem})), changed},
		{"relink", must(cluster.NewCommand(commandRelink, 1, relinkBody{Serial: one, Link: one, Actor: actorEnrollment})),
			enc(relinkResult{Issuer: "ca-x", Serials: [][]byte{one}, OldLink: one})},
		{"migrate", must(cluster.NewCommand(commandMigratePeople, 1, migrateBody{})), enc(migrateResult{Serials: [][]byte{one}, Persons: [][]byte{one}})},
		{"issuer create", must(cluster.NewCommand(commandIssuerCreate, 1, issuerCreateBody{ID: "ca-x", KeyLabel: "ca-x", PublicKey: one, CRLShards: 16})), nil},
		{"issuer install", must(cluster.NewCommand(commandIssuerInstall, 1, issuerInstallBody{ID: "ca-x", Cert: one, Chain: [][]byte{one}})), nil},
		{"issuer retire", must(cluster.NewCommand(commandIssuerRetire, 1, issuerRetireBody{ID: "ca-x"})), nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			ds, err := describeCommand(cluster.Entry{Command: c.cmd}, c.result)
			if err != nil || len(ds) == 0 {
				t.Fatalf("%d descriptions, %v", len(ds), err)
			}
			for _, d := range ds {
				row, ok := rows[d.Type]
				if !ok {
					t.Errorf("docs/audit.md has no row for the leaf %s", d.Type)
					continue
				}
				keys := make([]string, 0, len(d.Data))
				for k := range d.Data {
					keys = append(keys, k)
				}
				slices.Sort(keys)
				for _, k := range keys {
					if !strings.Contains(row, "`"+k+"`") {
						t.Errorf("docs/audit.md's row for %s does not name its data key %s:\n%s", d.Type, k, row)
					}
				}
			}
		})
	}
}
