package node

import "github.com/inkan-pki/inkan/internal/yamlshape"

// fieldError is one problem with the configuration file, in the file's words: the
// option's YAML path as written ("cluster.raft.election_timeout",
// "jpki.anchors[1]"; empty for a file that is not YAML) and the line it is on (0
// when the option is absent).
type fieldError = yamlshape.Error
