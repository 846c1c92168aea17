// Package house holds the tests of the rules of the house that span the whole
// module rather than one package: that no code outside tests tells errors apart
// by their text (errors keep their identity through sentinels, typed errors and
// cluster.Refusal codes, and callers use errors.Is and errors.As); that no
// package imports above its floor (shared/DESIGN.md's layout table); that the
// exported surface stays within its bound and no exported function returns a
// type its callers cannot name; and that node stays wiring, within its line
// bound. It has no code of its own: its tests read the module's source.
package house
