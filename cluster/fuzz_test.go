package cluster

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"reflect"
	"strings"
	"testing"
)

// The join protocol reads a frame from anyone who can reach the port, so
// the frame and request decoders face the network.
func FuzzRPCFrame(f *testing.F) {
	for _, req := range []rpcRequest{
		{Op: opJoin, Join: &joinRequest{TokenID: []byte("12345678"), Secret: make([]byte, 32), Node: "n1", Addr: "127.0.0.1:1", CSR: []byte{0x30}, TransportKey: []byte("{}")}},
		{Op: opSubmit, ID: make([]byte, 16), Cmd: []byte{0x83, 0x61, 't', 0x01, 0x00}},
		{Op: opReadIndex},
	} {
		var buf bytes.Buffer
		w := bufio.NewWriter(&buf)
		if err := writeFrame(w, req); err != nil {
			f.Fatal(err)
		}
		f.Add(buf.Bytes())
	}
	f.Add(binary.BigEndian.AppendUint32(nil, maxFrame+1))
	f.Fuzz(func(t *testing.T, data []byte) {
		var req rpcRequest
		if err := readFrame(bufio.NewReader(bytes.NewReader(data)), &req); err != nil {
			return
		}
		var buf bytes.Buffer
		if err := writeFrame(bufio.NewWriter(&buf), req); err != nil {
			t.Fatalf("re-encode %+v: %v", req, err)
		}
		var again rpcRequest
		if err := readFrame(bufio.NewReader(&buf), &again); err != nil {
			t.Fatalf("decode re-encoded: %v", err)
		}
		if !reflect.DeepEqual(normal(req), normal(again)) {
			t.Fatalf("round trip changed %+v into %+v", req, again)
		}
	})
}

// normal makes empty and nil byte slices compare equal.
func normal(r rpcRequest) rpcRequest {
	for _, b := range []*[]byte{&r.ID, &r.Cmd} {
		if len(*b) == 0 {
			*b = nil
		}
	}
	if r.Join != nil {
		j := *r.Join
		for _, b := range []*[]byte{&j.TokenID, &j.Secret, &j.CSR, &j.TransportKey} {
			if len(*b) == 0 {
				*b = nil
			}
		}
		r.Join = &j
	}
	return r
}

// A command has exactly one encoding: whatever decodes re-encodes to the
// same bytes (the audit log depends on it).
func FuzzDecodeCommand(f *testing.F) {
	for _, c := range []Command{
		{Type: "test.put", Version: 1, Body: []byte{0xa1, 0x61, 'a', 0x01}},
		{Type: "x", Version: 0, Body: []byte{0xf6}},
	} {
		raw, err := encodeCommand(c)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(raw)
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		c, err := decodeCommand(raw)
		if err != nil {
			return
		}
		again, err := encodeCommand(c)
		if err != nil || !bytes.Equal(again, raw) {
			t.Fatalf("decoded %x, re-encoded %x (%v)", raw, again, err)
		}
	})
}

func FuzzJoinToken(f *testing.F) {
	f.Add(joinToken{id: make([]byte, 8), secret: make([]byte, 32), fingerprint: make([]byte, 32)}.String())
	f.Add("inkan-join...")
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := parseJoinToken(s)
		if err != nil {
			return
		}
		if got := tok.String(); got != strings.TrimSpace(s) && !strings.EqualFold(got, strings.TrimSpace(s)) {
			t.Fatalf("parsed %q, prints %q", s, got)
		}
	})
}
