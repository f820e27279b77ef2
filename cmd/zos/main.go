// Command zos is the single zos binary: node daemon, dev cluster and CLI.
// It only parses flags and calls the packages' Run functions.
package main

import (
	"context"
	"errors"
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
		var ec interface{ ExitCode() int }
		if errors.As(err, &ec) {
			os.Exit(ec.ExitCode())
		}
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
	root.AddCommand(newNodeCmd(), newDevCmd(), newClusterCmd(), newTokenCmd(), newPoolCmd(), newStoreCmd(), newVDiskCmd(), newFlistCmd(), newJobCmd(), newContainerCmd(), newVMCmd(), newBenchCmd(), newVersionCmd())
	return root
}

// version is set at build time: -ldflags "-X main.version=…".
var version = "dev"

func newVersionCmd() *cobra.Command {
	return &cobra.Command{Use: "version", Short: "Print the zos version", Args: cobra.NoArgs,
		Run: func(cmd *cobra.Command, args []string) { fmt.Fprintln(cmd.OutOrStdout(), "zos", version) }}
}
