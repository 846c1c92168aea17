package policies

import (
	"fmt"
	"strings"

	"gopkg.in/yaml.v3"
)

// Normalize is the profile in its normal form: the file's fields in a fixed order,
// defaults spelled out, comments and layout gone, durations as Go writes them. Two
// files with the same normal form mean the same policy.
func (p *Profile) Normalize() string {
	var b strings.Builder
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(p); err != nil {
		// Profile holds only strings, numbers, durations and slices of them.
		panic(fmt.Sprintf("policies: encode profile: %v", err))
	}
	_ = enc.Close()
	return b.String()
}

// Diff shows how candidate differs from active as a unified-style line diff of
// their normal forms ("" when they mean the same), for an operator to read before
// activating a new version. It also says whether the version number moved forward.
func (p *Profile) Diff(candidate *Profile) string {
	active := p
	a := strings.Split(strings.TrimSuffix(active.Normalize(), "\n"), "\n")
	c := strings.Split(strings.TrimSuffix(candidate.Normalize(), "\n"), "\n")
	body := lineDiff(a, c)
	if body == "" {
		return ""
	}
	var b strings.Builder
	fmt.Fprintf(&b, "--- %s v%d (active)\n+++ %s v%d (candidate)\n", active.Name, active.Version, candidate.Name, candidate.Version)
	if candidate.Version <= active.Version {
		fmt.Fprintf(&b, "! version %d does not follow the active %d: certificates would not tell the two apart\n", candidate.Version, active.Version)
	}
	b.WriteString(body)
	return b.String()
}

// lineDiff is a longest-common-subsequence diff: " " kept, "-" removed, "+" added.
// Profiles are a few dozen lines, so the quadratic table is small.
func lineDiff(a, b []string) string {
	n, m := len(a), len(b)
	lcs := make([][]int, n+1)
	for i := range lcs {
		lcs[i] = make([]int, m+1)
	}
	for i := n - 1; i >= 0; i-- {
		for j := m - 1; j >= 0; j-- {
			if a[i] == b[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	var out strings.Builder
	changed := false
	i, j := 0, 0
	for i < n || j < m {
		switch {
		case i < n && j < m && a[i] == b[j]:
			out.WriteString("  " + a[i] + "\n")
			i++
			j++
		case i < n && (j == m || lcs[i+1][j] >= lcs[i][j+1]):
			out.WriteString("- " + a[i] + "\n")
			i++
			changed = true
		default:
			out.WriteString("+ " + b[j] + "\n")
			j++
			changed = true
		}
	}
	if !changed {
		return ""
	}
	return out.String()
}
