package hsm_test

import (
	"context"
	"encoding/hex"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/inkan-pki/inkan/hsm"
	"github.com/inkan-pki/inkan/hsm/softhsm"
	"github.com/inkan-pki/inkan/internal/testenv"
)

// TestPKCS11ToolSeesKeys: keys inkan generates show in OpenSC's pkcs11-tool with
// the labels and IDs given, so operators can inspect a token with standard tools.
func TestPKCS11ToolSeesKeys(t *testing.T) {
	t.Parallel()
	tool := testenv.Tool(t, "pkcs11-tool", "opensc")
	tk := softhsm.NewToken(t)
	ctx := context.Background()
	specs := []hsm.KeySpec{
		{Type: hsm.ECP256, Label: "ca-2026", ID: []byte{0x01}},
		{Type: hsm.RSA2048, Label: "ocsp-responder", ID: []byte{0xbe, 0xef}},
		{Type: hsm.Ed25519, Label: "audit-checkpoint", ID: []byte{0x20, 0x26}},
	}
	for _, s := range specs {
		if _, err := tk.HSM.GenerateKey(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	// The child inherits SOFTHSM2_CONF, so it sees this process's tokens. The PIN
	// goes on its command line only because pkcs11-tool has no other way in a
	// non-interactive test; the token is throwaway.
	cmd := exec.CommandContext(ctx, tool, "--module", tk.Module, "--token-label", tk.Label,
		"--list-objects", "--login", "--pin", tk.PIN)
	cmd.Env = append(os.Environ(), "SOFTHSM2_CONF="+tk.Conf)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("pkcs11-tool: %v\n%s", err, out)
	}
	objects := parseToolObjects(string(out))
	for _, s := range specs {
		for _, class := range []string{"Private Key", "Public Key"} {
			id, ok := objects[class+"/"+s.Label]
			if !ok {
				t.Errorf("pkcs11-tool does not list %s %q:\n%s", class, s.Label, out)
				continue
			}
			if id != hex.EncodeToString(s.ID) {
				t.Errorf("pkcs11-tool: %s %q has ID %s, want %x", class, s.Label, id, s.ID)
			}
		}
	}
}

// parseToolObjects reads pkcs11-tool --list-objects output into
// "Private Key/label" -> hex ID.
func parseToolObjects(out string) map[string]string {
	objects := map[string]string{}
	var class, label string
	for line := range strings.SplitSeq(out, "\n") {
		switch {
		case strings.HasPrefix(line, "Private Key Object"):
			class, label = "Private Key", ""
		case strings.HasPrefix(line, "Public Key Object"):
			class, label = "Public Key", ""
		case !strings.HasPrefix(line, " "):
			class = ""
		case class != "" && strings.HasPrefix(strings.TrimSpace(line), "label:"):
			label = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(line), "label:"))
		case class != "" && strings.HasPrefix(strings.TrimSpace(line), "ID:"):
			objects[class+"/"+label] = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(line), "ID:"))
		}
	}
	return objects
}
