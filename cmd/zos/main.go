// Command zos is the single zos binary: node daemon, dev cluster and CLI.
// It only parses flags and calls the packages' Run functions.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root := newRootCmd()
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "zos:", err)
		os.Exit(1)
	}
}

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "zos",
		Short:         "zos: a stateless node OS with a pooled, erasure-coded chunk store, vdisks and flists",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	return root
}
