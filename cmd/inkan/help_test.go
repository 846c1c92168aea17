package main

import (
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// TestEveryCommandHasAnExample: issue 8 asks for --help with examples on every
// command; a command added without one fails here.
func TestEveryCommandHasAnExample(t *testing.T) {
	seen := 0
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if c.Runnable() && !c.Hidden && c.Name() != "help" && c.Parent() != nil && c.Parent().Name() != "completion" {
			seen++
			if c.Example == "" {
				t.Errorf("%s has no Example", c.CommandPath())
			}
			if c.Short == "" {
				t.Errorf("%s has no Short", c.CommandPath())
			}
		}
		for _, s := range c.Commands() {
			walk(s)
		}
	}
	root := newRootCmd()
	root.InitDefaultCompletionCmd()
	walk(root)
	if seen < 40 {
		t.Fatalf("walked %d commands; the tree has more", seen)
	}
}

// TestReadmeListsEveryCommand: the README's CLI block names every command a
// newcomer can run, and nothing that is not one. Each runnable command's path
// (admin cluster join-token) must appear on one `inkan` line of the block: every
// word before the last as a word of the line, the last as a word too (in an
// `a|b|c` list or an "also:" comment). Each `x|y|z` list names only commands.
func TestReadmeListsEveryCommand(t *testing.T) {
	raw, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(raw), "## The CLI\n\n```text\n")
	block, _, ok2 := strings.Cut(after, "```")
	if !ok || !ok2 {
		t.Fatal("README.md has no ```text block under ## The CLI")
	}
	var lines [][]string // each line's words
	for _, l := range strings.Split(block, "\n") {
		if ws := strings.FieldsFunc(l, func(r rune) bool {
			return r == ' ' || r == '|' || r == ',' || r == ':' || r == '#' || r == '[' || r == ']' || r == ';'
		}); len(ws) > 0 && ws[0] == "inkan" {
			lines = append(lines, ws)
		}
	}
	has := func(ws []string, w string) bool { return slices.Contains(ws, w) }

	root := newRootCmd()
	known := map[string]bool{}
	var walk func(c *cobra.Command, path []string)
	walk = func(c *cobra.Command, path []string) {
		for _, s := range c.Commands() {
			if s.Hidden || s.Name() == "help" || s.Name() == "completion" {
				continue
			}
			p := append(slices.Clone(path), s.Name())
			known[s.Name()] = true
			if s.Runnable() {
				found := slices.ContainsFunc(lines, func(ws []string) bool {
					for _, w := range p {
						if !has(ws, w) {
							return false
						}
					}
					return true
				})
				if !found {
					t.Errorf("README.md's CLI block does not name `inkan %s`", strings.Join(p, " "))
				}
			}
			walk(s, p)
		}
	}
	walk(root, nil)
	// The other way: a|b|c lists name commands only.
	for _, l := range strings.Split(block, "\n") {
		cmdPart, _, _ := strings.Cut(l, "#")
		for _, f := range strings.Fields(cmdPart) {
			if !strings.Contains(f, "|") {
				continue
			}
			for _, w := range strings.Split(f, "|") {
				if w != "" && !known[w] {
					t.Errorf("README.md's CLI block lists %q, which is no command: %s", w, strings.TrimSpace(l))
				}
			}
		}
	}
}
