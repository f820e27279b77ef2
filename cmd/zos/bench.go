package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/zosproject/zos/bench"
)

func newBenchCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "bench", Short: "Benchmarks against their anchors (results as ratios; see docs/benchmarks.md)"}
	cmd.AddCommand(newBenchRaftCmd())
	all := &cobra.Command{Use: "all", Short: "Run every benchmark", Args: cobra.NoArgs}
	all.RunE = func(c *cobra.Command, args []string) error {
		for _, sub := range cmd.Commands() {
			if sub == c || sub.Name() == "help" || sub.Name() == "completion" {
				continue
			}
			fmt.Fprintf(c.OutOrStdout(), "== zos bench %s\n", sub.Name())
			sub.SetContext(c.Context())
			if err := sub.RunE(sub, nil); err != nil {
				return fmt.Errorf("bench %s: %w", sub.Name(), err)
			}
		}
		return nil
	}
	cmd.AddCommand(all)
	return cmd
}

func newBenchRaftCmd() *cobra.Command {
	var cfg bench.RaftConfig
	cmd := &cobra.Command{Use: "raft", Short: "Control-plane commits/s and p50/p99 commit latency on a 3-node loopback cluster", Args: cobra.NoArgs}
	cmd.Flags().DurationVar(&cfg.Duration, "duration", 5*time.Second, "time per mode")
	cmd.Flags().IntVar(&cfg.Clients, "clients", 32, "concurrent proposers")
	cmd.Flags().IntVar(&cfg.Batch, "batch", 64, "commands per batched proposal")
	out := addOutputFlag(cmd)
	cmd.RunE = func(c *cobra.Command, args []string) error {
		res, err := bench.Raft(c.Context(), cfg, c.ErrOrStderr())
		if err != nil {
			return err
		}
		return output(*out, c.OutOrStdout(), res, func() {
			var rows [][]string
			for _, r := range res {
				rows = append(rows, []string{r.Mode, fmt.Sprint(r.Clients), fmt.Sprint(r.Batch), fmt.Sprintf("%.0f", r.OpsPerSec),
					r.P50.Round(10 * time.Microsecond).String(), r.P99.Round(10 * time.Microsecond).String(), fmt.Sprint(r.Errors),
					fmt.Sprintf("%.2f×", r.OpsPerSec/2000)})
			}
			table(c.OutOrStdout(), []string{"MODE", "CLIENTS", "BATCH", "OPS/S", "P50", "P99", "ERRORS", "VS AIM 2000/S"}, rows)
		})
	}
	return cmd
}
