package audit

import (
	"bytes"
	"context"
	"crypto"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// Client reads a node's audit API; it is a Source, so Export writes an export
// from a live node (`inkan audit export --url`). It checks what it can on the way
// in — each leaf's hash and index, each checkpoint's origin and signature with the
// key it was given — but the export is only as good as Verify says it is.
type Client struct {
	base *url.URL
	hc   *http.Client
	pub  crypto.PublicKey
}

// NewClient reads the audit API at base (the node's HTTPS API, e.g.
// "https://node1:8443"). pub is the audit key the auditor trusts; if nil, the
// node's own key is fetched and used (check its KeyFingerprint against the
// published one). hc carries the auditor's TLS settings (nil: http.DefaultClient).
func NewClient(ctx context.Context, base string, hc *http.Client, pub crypto.PublicKey) (*Client, error) {
	u, err := url.Parse(strings.TrimSuffix(base, "/"))
	if err != nil {
		return nil, fmt.Errorf("audit: API URL: %w", err)
	}
	if hc == nil {
		hc = http.DefaultClient
	}
	c := &Client{base: u, hc: hc, pub: pub}
	if pub == nil {
		b, err := c.get(ctx, pathKey, nil)
		if err != nil {
			return nil, err
		}
		if c.pub, err = ParsePublicKey(b); err != nil {
			return nil, err
		}
	} else if _, err := auditKey(pub); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *Client) get(ctx context.Context, path string, q url.Values) ([]byte, error) {
	u := *c.base
	u.Path += path
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json, application/problem+json")
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4*maxPageLeaves*maxLeafSize/3+1<<20))
	if err != nil {
		return nil, fmt.Errorf("audit: GET %s: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		p := &apiProblem{}
		if strings.HasPrefix(resp.Header.Get("Content-Type"), contentProblem) && json.Unmarshal(b, p) == nil && p.Type != "" {
			return nil, p
		}
		return nil, fmt.Errorf("audit: GET %s: %s", path, resp.Status)
	}
	return b, nil
}

func (c *Client) getJSON(ctx context.Context, path string, q url.Values, v any) error {
	b, err := c.get(ctx, path, q)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("audit: GET %s: %w", path, err)
	}
	return nil
}

// PublicKey implements Source.
func (c *Client) PublicKey() crypto.PublicKey { return c.pub }

// Size implements Source: the size of the newest checkpoint, so that every leaf
// of an export through the API is covered by a signature.
func (c *Client) Size(ctx context.Context) (uint64, error) {
	cp, ok, err := c.Latest(ctx)
	if err != nil || !ok {
		return 0, err
	}
	return cp.Size, nil
}

// Range implements Source.
func (c *Client) Range(ctx context.Context, size uint64) ([][]byte, error) {
	var r rangeJSON
	if err := c.getJSON(ctx, pathRange, url.Values{"size": {strconv.FormatUint(size, 10)}}, &r); err != nil {
		return nil, err
	}
	return r.Hashes, nil
}

// Leaves implements Source, a page (maxPageLeaves) per request.
func (c *Client) Leaves(ctx context.Context, from, to uint64, fn func(uint64, []byte) error) error {
	for from < to {
		var page LeavesJSON
		q := url.Values{"from": {strconv.FormatUint(from, 10)}, "to": {strconv.FormatUint(to, 10)}}
		if err := c.getJSON(ctx, pathLeaves, q, &page); err != nil {
			return err
		}
		if len(page.Leaves) == 0 {
			return fmt.Errorf("audit: leaves from %d: empty page", from)
		}
		for _, l := range page.Leaves {
			if l.Index != from {
				return fmt.Errorf("audit: leaves: got leaf %d, want %d", l.Index, from)
			}
			if !bytes.Equal(HashLeaf(l.Leaf), l.Hash) {
				return fmt.Errorf("audit: leaf %d: its hash is not the one the API gave", l.Index)
			}
			if err := fn(l.Index, l.Leaf); err != nil {
				return err
			}
			from++
			if from == to {
				break
			}
		}
	}
	return nil
}

func (cj checkpointJSON) checkpoint() (Checkpoint, error) {
	return ParseCheckpoint([]byte(cj.Body), cj.Signature)
}

// Checkpoints implements Source, a page (maxPageCheckpoints) per request.
func (c *Client) Checkpoints(ctx context.Context, fn func(Checkpoint) error) error {
	var next uint64
	for {
		var page struct {
			Checkpoints []checkpointJSON `json:"checkpoints"`
		}
		if err := c.getJSON(ctx, pathCheckpoints, url.Values{"from": {strconv.FormatUint(next, 10)}}, &page); err != nil {
			return err
		}
		for _, cj := range page.Checkpoints {
			cp, err := cj.checkpoint()
			if err != nil {
				return fmt.Errorf("audit: checkpoint %d: %w", cj.Size, err)
			}
			if cp.Size < next {
				return fmt.Errorf("audit: checkpoints: size %d after %d", cp.Size, next)
			}
			if err := fn(cp); err != nil {
				return err
			}
			next = cp.Size + 1
		}
		if len(page.Checkpoints) < maxPageCheckpoints {
			return nil
		}
	}
}

// Latest implements Source.
func (c *Client) Latest(ctx context.Context) (Checkpoint, bool, error) {
	var cj checkpointJSON
	err := c.getJSON(ctx, pathCheckpoint, nil, &cj)
	var p *apiProblem
	if errors.As(err, &p) && p.Type == problemBase+problemNoCheckpoint {
		return Checkpoint{}, false, nil
	}
	if err != nil {
		return Checkpoint{}, false, err
	}
	cp, err := cj.checkpoint()
	return cp, err == nil, err
}

// Inclusion fetches the proof that leaf index is in the tree of the given size.
func (c *Client) Inclusion(ctx context.Context, index, size uint64) (ProofJSON, error) {
	var p ProofJSON
	err := c.getJSON(ctx, pathInclusion, url.Values{"index": {strconv.FormatUint(index, 10)}, "size": {strconv.FormatUint(size, 10)}}, &p)
	return p, err
}

// Consistency fetches the proof that the tree of size from is a prefix of the
// tree of size to.
func (c *Client) Consistency(ctx context.Context, from, to uint64) (ProofJSON, error) {
	var p ProofJSON
	err := c.getJSON(ctx, pathConsistency, url.Values{"from": {strconv.FormatUint(from, 10)}, "to": {strconv.FormatUint(to, 10)}}, &p)
	return p, err
}

// Checkpoint fetches the stored checkpoint of one size.
func (c *Client) Checkpoint(ctx context.Context, size uint64) (Checkpoint, error) {
	var cj checkpointJSON
	if err := c.getJSON(ctx, pathCheckpoints+"/"+strconv.FormatUint(size, 10), nil, &cj); err != nil {
		return Checkpoint{}, err
	}
	return cj.checkpoint()
}

// Serial fetches the leaves about one certificate.
func (c *Client) Serial(ctx context.Context, serial string) (LeavesJSON, error) {
	var l LeavesJSON
	err := c.getJSON(ctx, pathSerials+url.PathEscape(serial), nil, &l)
	return l, err
}
