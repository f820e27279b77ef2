package main

import (
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/zosproject/zos/bench"
)

func newBenchAgentCmd() *cobra.Command {
	var cfg bench.AgentConfig
	cmd := &cobra.Command{Use: "agent", Short: "Node agent core.ping round trips/s and p50/p99 (a real zos node) vs a real redis-server (RPUSH+BLPOP)", Args: cobra.NoArgs}
	cmd.Flags().DurationVar(&cfg.Duration, "duration", 5*time.Second, "time per target")
	cmd.Flags().IntVar(&cfg.Clients, "clients", 16, "concurrent clients")
	var inProcess bool
	cmd.Flags().BoolVar(&inProcess, "in-process", false, "run the agent inside the benchmark process instead of a `zos node`")
	out := addOutputFlag(cmd)
	cmd.RunE = func(c *cobra.Command, args []string) error {
		if !inProcess {
			exe, err := os.Executable()
			if err != nil {
				return err
			}
			cfg.Binary, cfg.Log = exe, c.ErrOrStderr()
		}
		res, err := bench.Agent(c.Context(), cfg, c.ErrOrStderr())
		if err != nil {
			return err
		}
		return output(*out, c.OutOrStdout(), res, func() {
			var rows [][]string
			for _, r := range res {
				rows = append(rows, []string{r.Target, fmt.Sprint(r.Clients), fmt.Sprint(r.Bytes), fmt.Sprintf("%.0f", r.OpsPerSec),
					r.P50.Round(time.Microsecond).String(), r.P99.Round(time.Microsecond).String(), fmt.Sprint(r.Errors), fmt.Sprintf("%.2f×", r.Ratio)})
			}
			table(c.OutOrStdout(), []string{"TARGET", "CLIENTS", "BYTES", "OPS/S", "P50", "P99", "ERRORS", "VS REDIS"}, rows)
		})
	}
	return cmd
}
