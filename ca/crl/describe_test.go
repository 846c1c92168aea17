package crl

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"math/big"
	"testing"

	"github.com/inkan-pki/inkan/cluster"
)

// TestDescribe: a crl.publish gives the audit log one leaf naming the CRL by
// its CA, shard, number and SHA-256; a crl.part, staged bytes, gives none; a
// command of another package is an error.
func TestDescribe(t *testing.T) {
	der := []byte("a CRL's bytes")
	cmds := publishCommands(t, 1, 3, der, publishVersion)
	var h describedHandler
	type leaf struct {
		typ, actor string
		serial     *big.Int
		data       map[string]any
	}
	describe := func(cmd cluster.Command) ([]leaf, error) {
		var out []leaf
		err := h.Describe(cluster.Entry{Command: cmd}, nil, func(typ, actor string, serial *big.Int, data map[string]any) {
			out = append(out, leaf{typ, actor, serial, data})
		})
		return out, err
	}
	for _, part := range cmds[:len(cmds)-1] {
		if ls, err := describe(part); err != nil || len(ls) != 0 {
			t.Errorf("crl.part described as %v, %v; want no leaf", ls, err)
		}
	}
	ls, err := describe(cmds[len(cmds)-1])
	if err != nil || len(ls) != 1 {
		t.Fatalf("crl.publish described as %v, %v; want one leaf", ls, err)
	}
	sum := sha256.Sum256(der)
	l := ls[0]
	if l.typ != typePublished || l.actor != actorSystem || l.serial != nil || l.data["ca"] != "ca1" || l.data["shard"] != 1 ||
		l.data["number"] != uint64(3) || !bytes.Equal(l.data["sha256"].([]byte), sum[:]) {
		t.Errorf("crl.publish leaf %+v", l)
	}
	if _, err := describe(cluster.Command{Type: "ca.issue", Version: 1}); !errors.Is(err, errForeignCommand) {
		t.Errorf("ca.issue described by crl: %v", err)
	}
}
