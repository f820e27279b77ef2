package main

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/zosproject/zos/node"
)

func newDevCmd() *cobra.Command {
	var cfg node.DevConfig
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run an embedded development cluster of N nodes on 127.0.0.1…N",
		Args:  cobra.NoArgs,
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Dir, "dir", ".zos/dev", "data directory (one subdirectory per node)")
	f.IntVar(&cfg.Nodes, "nodes", 3, "number of nodes")
	f.StringVar(&cfg.Token, "token", "", "admin token (generated if empty, kept in DIR/admin-token)")
	f.StringVar(&cfg.BaseIP, "base-ip", "127.0.0.1", "address of the first node; the others follow")
	tlsOn := f.Bool("tls", true, "TLS everywhere with the cluster CA (--tls=false: plaintext, loopback lab)")
	level, format := addLogFlags(cmd)
	cmd.Flags().Lookup("log-level").DefValue = "warn"
	cmd.Flags().Set("log-level", "warn")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		log, err := newLogger(*level, *format)
		if err != nil {
			return err
		}
		cfg.Logger = log
		cfg.DisableTLS = !*tlsOn
		start := time.Now()
		d, err := node.StartDev(cmd.Context(), cfg)
		if err != nil {
			return err
		}
		abs, _ := filepath.Abs(cfg.Dir)
		w := cmd.OutOrStdout()
		fmt.Fprintf(w, "zos dev cluster: %d nodes serving after %v (data in %s)\n\n", len(d.Nodes), time.Since(start).Round(time.Millisecond), abs)
		scheme, env := "http", ""
		if d.CAFile != "" {
			caAbs, _ := filepath.Abs(d.CAFile)
			scheme, env = "https", " ZOS_CACERT="+caAbs
			fmt.Fprintf(w, "cluster CA: %s (curl --cacert, redis-cli --tls --cacert, nbdinfo tls-certificates)\n\n", caAbs)
		}
		var rows [][]string
		for _, n := range d.Nodes {
			c := n.Config()
			rows = append(rows, []string{n.ID(), scheme + "://" + n.APIAddr(), fmt.Sprintf("nbd://%s:%d/NAME", c.Bind, c.NBDPort),
				fmt.Sprintf("%s:%d", c.Bind, c.RESPPort), fmt.Sprintf("%s:%d", c.Bind, c.ShardPort), fmt.Sprintf("%s:%d", c.Bind, c.RaftPort)})
		}
		table(w, []string{"NODE", "API", "NBD", "RESP", "SHARDS", "RAFT"}, rows)
		fmt.Fprintf(w, "\nadmin token: %s\n\n", d.Token)
		fmt.Fprintf(w, "  export ZOS_ADDR=%s://%s ZOS_TOKEN=%s%s\n  zos cluster status\n\nCtrl-C stops the cluster.\n", scheme, d.Nodes[0].APIAddr(), d.Token, env)
		<-cmd.Context().Done()
		fmt.Fprintln(os.Stderr, "stopping…")
		return d.Close()
	}
	return cmd
}
