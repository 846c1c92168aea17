// Package yamlshape reads a YAML file into a typed struct and says what is wrong
// with it in the file's words. Before yaml.v3 decodes a document, Decode walks it
// against the struct's shape and reports every misspelt option (with the one
// meant, if one is close), every option given twice and every value of the
// wrong kind as an Error with its YAML path, its line and what the option takes
// — never a Go type name, which is all yaml.v3's own errors give. A file that is
// not YAML is reported at the line where it stops being YAML. The walk is bounded
// in depth and nodes, so no document of aliases can make it run long. The
// node's configuration is read with it; it knows nothing of inkan.
package yamlshape
