package node_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/inkan-pki/inkan/admin"
	"github.com/inkan-pki/inkan/node"
)

// A node's life in a program: start it from its file, drain it on SIGTERM,
// and stop with its error if it stops on its own (what `inkan server` does).
func ExampleStart() {
	cfg, err := node.LoadConfig("/etc/inkan/node.yaml")
	if err != nil {
		log.Fatal(err) // names the file and every bad field
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	n, err := node.Start(ctx, cfg)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("serving; metrics on", n.Addrs().Metrics)
	select {
	case <-ctx.Done():
		err = n.Stop(context.Background()) // drain, then stop; a restart resumes
	case <-n.Done():
		err = n.Err() // the cluster stopped on its own
	}
	if err != nil {
		log.Fatal(err)
	}
}

// A service plugs into the node as a Component: its command handlers go to the
// cluster before it opens; Start mounts its API once the cluster runs.
func ExampleComponent() {
	greeter := node.Component{
		Name: "greeter",
		// Handlers: []cluster.Handler{...}, Hooks: ..., ReplicatedKeys: ...
		Start: func(_ context.Context, env *node.Env) error {
			env.API.HandleFunc("GET /greet/", func(w http.ResponseWriter, _ *http.Request) {
				fmt.Fprintf(w, "hello from %s\n", env.Cluster.ID())
			})
			return nil
		},
		Stop: func(context.Context) error { return nil },
	}
	cfg, err := node.LoadConfig("/etc/inkan/node.yaml")
	if err != nil {
		log.Fatal(err)
	}
	n, err := node.Start(context.Background(), cfg, greeter)
	if err != nil {
		log.Fatal(err)
	}
	defer n.Stop(context.Background())
}

// The operator's side: a join granted to a new voter's keys through the node's
// admin socket (what `inkan join-keys` on the new node and `inkan admin cluster
// join-token` do).
func ExamplePrepareJoin() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	newNode, err := node.LoadConfig("/etc/inkan/node4.yaml")
	if err != nil {
		log.Fatal(err)
	}
	keys, err := node.PrepareJoin(ctx, newNode) // on the new node, before its first start
	if err != nil {
		log.Fatal(err)
	}
	ac := admin.NewClient("/var/lib/inkan/admin.sock")
	tok, grant, err := ac.GrantJoin(ctx, "voter", keys, time.Hour)
	var proposed *admin.ProposedError
	switch {
	case errors.As(err, &proposed):
		fmt.Println("the token admits the node once", proposed.Request.ID, "is approved")
	case err != nil:
		log.Fatal(err) // a *admin.Problem names its type, e.g. no-leader
	default:
		fmt.Println("granted to", grant.Node, "transport key", grant.TransportKey)
	}
	fmt.Println(tok)
}
