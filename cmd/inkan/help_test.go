package main

import (
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
