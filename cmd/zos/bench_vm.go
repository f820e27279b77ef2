package main

import (
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/zosproject/zos/bench"
)

func newBenchVMCmd() *cobra.Command {
	var cfg bench.VMConfig
	cmd := &cobra.Command{Use: "vm", Short: "VM boot to userspace from a cloned vdisk vs the raw image through qemu-nbd, and ten clones' stored bytes vs ten copies (a real zos node; root)", Args: cobra.NoArgs}
	cmd.Flags().IntVar(&cfg.Rounds, "rounds", 3, "boots per target")
	cmd.Flags().IntVar(&cfg.Clones, "clones", 10, "VMs cloned from one template")
	out := addOutputFlag(cmd)
	cmd.RunE = func(c *cobra.Command, args []string) error {
		exe, err := os.Executable()
		if err != nil {
			return err
		}
		cfg.Binary, cfg.Log = exe, c.ErrOrStderr()
		rep, err := bench.VM(c.Context(), cfg)
		if err != nil {
			return err
		}
		return output(*out, c.OutOrStdout(), rep, func() {
			w := c.OutOrStdout()
			fmt.Fprintf(w, "accel: %s\n", rep.Accel)
			var rows [][]string
			for _, b := range rep.Boot {
				rows = append(rows, []string{b.Target, fmt.Sprint(b.Boots), b.Mean.Round(time.Millisecond).String(),
					b.Min.Round(time.Millisecond).String(), fmt.Sprintf("%.2f×", b.Speed)})
			}
			table(w, []string{"BOOT FROM", "BOOTS", "MEAN", "MIN", "SPEED VS QEMU-NBD"}, rows)
			s := rep.Storage
			fmt.Fprintf(w, "\n%d clones of one template, each booted: %s stored vs %s for %d copies (template %s): %.1f× less\n",
				s.Clones, humanBytes(s.Stored), humanBytes(s.Copies), s.Clones, humanBytes(s.Template), s.Ratio)
		})
	}
	return cmd
}
