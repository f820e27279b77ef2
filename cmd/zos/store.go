package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/chunkstore/erasure"
	"github.com/zosproject/zos/orchestrator/api"
	"github.com/zosproject/zos/orchestrator/client"
)

func newStoreCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "store", Short: "The chunk store: put and get blobs, shard status, healing, scrub, garbage collection"}

	put := &cobra.Command{Use: "put FILE", Short: "Store a file of any size (chunks + manifest); prints its Ref", Args: cobra.ExactArgs(1)}
	pool := put.Flags().String("pool", "", "pool (default: the default pool)")
	noPin := put.Flags().Bool("no-pin", false, "do not pin the blob (the garbage collector may then remove it)")
	put.RunE = func(c *cobra.Command, args []string) error {
		body, _, done, err := openProgress("put "+args[0], args[0])
		if err != nil {
			return err
		}
		resp, err := client.FromEnv().PutBlob(c.Context(), body, client.PutBlobOptions{Note: args[0], Pool: *pool, NoPin: *noPin})
		done()
		if err != nil {
			return err
		}
		fmt.Fprintln(c.OutOrStdout(), resp.Ref)
		return nil
	}

	get := &cobra.Command{Use: "get REF", Short: "Read a blob back (to stdout, or -o FILE)", Args: cobra.ExactArgs(1)}
	out := get.Flags().StringP("output", "o", "-", "output file")
	get.RunE = func(c *cobra.Command, args []string) error {
		ref, err := chunkstore.ParseRef(args[0])
		if err != nil {
			return err
		}
		blob, size, err := client.FromEnv().GetBlob(c.Context(), ref)
		if err != nil {
			return err
		}
		defer blob.Close()
		var w io.Writer = c.OutOrStdout()
		var f *os.File
		if *out != "-" {
			if f, err = os.Create(*out); err != nil {
				return err
			}
			w = f
		}
		body, done := progressReader("get "+ref.Short(), blob, size)
		_, err = io.Copy(w, body)
		done()
		if f != nil {
			if cerr := f.Close(); err == nil {
				err = cerr
			}
		}
		return err
	}

	stat := &cobra.Command{Use: "stat REF", Short: "Where each shard of a blob's chunks is, and whether it is healthy", Args: cobra.ExactArgs(1)}
	sOut := addOutputFlag(stat)
	stat.RunE = func(c *cobra.Command, args []string) error {
		ref, err := chunkstore.ParseRef(args[0])
		if err != nil {
			return err
		}
		st, err := client.FromEnv().StatBlob(c.Context(), ref)
		if err != nil {
			return err
		}
		return output(*sOut, c.OutOrStdout(), st, func() {
			w := c.OutOrStdout()
			var size int64
			for _, ch := range st.Chunks {
				size += ch.Size
			}
			fmt.Fprintf(w, "ref:     %s\nchunks:  %d (%s stored): %d healthy, %d degraded, %d unreadable\n\n",
				st.Ref, len(st.Chunks), humanBytes(size), st.Healthy, st.Degraded, st.Unreadable)
			var rows [][]string
			for _, ch := range st.Chunks {
				health := "healthy"
				switch {
				case !ch.Readable:
					health = "UNREADABLE"
				case ch.Undersized:
					health = "undersized → " + ch.Target
				case ch.Degraded:
					health = "degraded"
				}
				var shards []string
				for _, sh := range ch.Shards {
					mark := sh.Home
					if !sh.Healthy {
						mark += "!"
					}
					shards = append(shards, fmt.Sprintf("%d:%s", sh.Index, mark))
				}
				rows = append(rows, []string{ch.Ref.Short(), ch.Coding, humanBytes(ch.Size), health, fmt.Sprint(ch.Tolerance), strings.Join(shards, " ")})
			}
			table(w, []string{"CHUNK", "PROFILE", "SIZE", "STATE", "SURVIVES", "SHARDS (index:home, ! = missing or corrupt)"}, rows)
		})
	}

	status := &cobra.Command{Use: "status", Short: "Chunks, bytes, degraded chunks and rebuild progress of every node", Args: cobra.NoArgs}
	stOut := addOutputFlag(status)
	quick := status.Flags().Bool("quick", false, "skip the census of every chunk (counters only)")
	status.RunE = func(c *cobra.Command, args []string) error {
		st, err := client.FromEnv().StoreStatus(c.Context(), !*quick)
		if err != nil {
			return err
		}
		return output(*stOut, c.OutOrStdout(), st, func() { printStoreStatus(c, st) })
	}

	scrub := &cobra.Command{Use: "scrub", Short: "Verify every shard on every node now and repair bitrot", Args: cobra.NoArgs}
	scOut := addOutputFlag(scrub)
	scrub.RunE = func(c *cobra.Command, args []string) error {
		res, err := client.FromEnv().Scrub(c.Context())
		if err != nil {
			return err
		}
		return output(*scOut, c.OutOrStdout(), res, func() {
			var rows [][]string
			for _, r := range res {
				rows = append(rows, []string{r.Node, fmt.Sprint(r.Scanned), humanBytes(r.Bytes), fmt.Sprint(r.Corrupt),
					fmt.Sprint(r.Repaired), fmt.Sprint(r.Unrepairable), orDash(r.Error)})
			}
			table(c.OutOrStdout(), []string{"NODE", "SCANNED", "BYTES", "CORRUPT", "REPAIRED", "UNREPAIRABLE", "ERROR"}, rows)
		})
	}

	gcCmd := &cobra.Command{Use: "gc", Short: "Collect chunks no vdisk, flist or pinned blob reaches", Args: cobra.NoArgs}
	dry := gcCmd.Flags().Bool("dry-run", false, "count what would be deleted, delete nothing")
	gOut := addOutputFlag(gcCmd)
	gcCmd.RunE = func(c *cobra.Command, args []string) error {
		res, err := client.FromEnv().GC(c.Context(), *dry)
		if err != nil {
			return err
		}
		return output(*gOut, c.OutOrStdout(), res, func() {
			w := c.OutOrStdout()
			verb := "deleted"
			if res.DryRun {
				verb = "would delete"
			}
			fmt.Fprintf(w, "marked %d live chunks; %s %d shards of %d chunks (%s) on %d nodes; %d recent shards spared (grace until %s)\n",
				res.Marked, verb, res.Shards, res.Chunks, humanBytes(res.Bytes), res.Nodes, res.Spared, res.Cutoff.Format(time.RFC3339))
			if len(res.Skipped) > 0 {
				fmt.Fprintf(w, "skipped (not up): %s\n", strings.Join(res.Skipped, ", "))
			}
		})
	}

	pins := &cobra.Command{Use: "pins", Short: "List pinned blobs (garbage-collection roots)", Args: cobra.NoArgs}
	pOut := addOutputFlag(pins)
	pins.RunE = func(c *cobra.Command, args []string) error {
		ps, err := client.FromEnv().Pins(c.Context())
		if err != nil {
			return err
		}
		return output(*pOut, c.OutOrStdout(), ps, func() {
			var rows [][]string
			for _, p := range ps {
				rows = append(rows, []string{p.Ref.String(), time.Unix(0, p.Created).UTC().Format(time.RFC3339), orDash(p.Note)})
			}
			table(c.OutOrStdout(), []string{"REF", "PINNED", "NOTE"}, rows)
		})
	}
	unpin := &cobra.Command{Use: "unpin REF", Short: "Unpin a blob; the next gc removes it unless something else uses it", Args: cobra.ExactArgs(1)}
	unpin.RunE = func(c *cobra.Command, args []string) error {
		ref, err := chunkstore.ParseRef(args[0])
		if err != nil {
			return err
		}
		return client.FromEnv().Unpin(c.Context(), ref)
	}
	cmd.AddCommand(put, get, stat, status, scrub, gcCmd, pins, unpin)
	return cmd
}

func printStoreStatus(c *cobra.Command, st api.StoreStatus) {
	w := c.OutOrStdout()
	fmt.Fprintf(w, "map epoch:  %d\nprofile:    %s (new chunks)\nshards:     %d (%s)\n", st.Epoch, st.Profile, st.Shards, humanBytes(st.Bytes))
	if cs := st.Census; cs != nil {
		fmt.Fprintf(w, "chunks:     %d (%s): %d healthy, %d degraded (%d undersized), %d unreadable; %d misplaced and %d stale shard copies\n",
			cs.Chunks, humanBytes(cs.Bytes), cs.Healthy, cs.Degraded, cs.Undersized, cs.Unreadable, cs.Misplaced, cs.Stale)
	}
	pending := map[string]erasure.PendingNode{}
	if pd := st.Pending; pd.Chunks > 0 || pd.Dropped > 0 {
		var waits []string
		for _, pn := range pd.Nodes {
			pending[pn.Node] = pn
			waits = append(waits, fmt.Sprintf("%s (%d chunks, for %s)", pn.Node, pn.Chunks+int(pn.Dropped), time.Since(pn.Since).Round(time.Second)))
		}
		fmt.Fprintf(w, "pending:    %d chunks written degraded, missing shards on %s", pd.Chunks, strings.Join(waits, ", "))
		if pd.Dropped > 0 {
			fmt.Fprintf(w, "; %d more not remembered (heal passes find them once their nodes answer)", pd.Dropped)
		}
		fmt.Fprintf(w, "; %d repaired so far\n", pd.Repaired)
	} else {
		fmt.Fprintf(w, "pending:    none (no degraded writes waiting for repair; %d repaired since the nodes started)\n", pd.Repaired)
	}
	fmt.Fprintln(w)
	heal := map[string]api.LocalStatus{}
	for _, l := range st.Local {
		heal[l.Node] = l
	}
	var rows [][]string
	for _, n := range st.Nodes {
		reach := "yes"
		if !n.Reachable {
			reach = "no"
		}
		l := heal[n.ID]
		rebuild := "-"
		if l.Error != "" {
			rebuild = "? " + l.Error
		} else if p := l.Heal; p.Running || p.ShardsTotal > 0 {
			pct := 100.0
			if p.BytesTotal > 0 {
				pct = 100 * float64(p.BytesDone) / float64(p.BytesTotal)
			}
			rebuild = fmt.Sprintf("%.0f%% rebuilt %d moved %d re-encoded %d", pct, p.Rebuilt, p.Moved, p.Reprofiled)
			if p.Running {
				rebuild += fmt.Sprintf(" %s/s ETA %s", humanBytes(int64(p.Rate)), p.ETA.Round(time.Second))
			}
		}
		lacks := "-"
		if pn, ok := pending[n.ID]; ok {
			lacks = fmt.Sprint(pn.Chunks)
			if pn.Dropped > 0 {
				lacks += fmt.Sprintf(" (+%d)", pn.Dropped)
			}
		}
		rows = append(rows, []string{n.ID, string(n.State), reach, fmt.Sprint(n.Stats.Shards), humanBytes(n.Stats.Bytes),
			fmt.Sprint(n.Stats.Corrupt), lacks, rebuild, fmt.Sprintf("%d/%d", l.Scrub.Corrupt, l.Scrub.Repaired)})
	}
	table(w, []string{"NODE", "STATE", "REACHABLE", "SHARDS", "BYTES", "CORRUPT", "LACKS", "HEAL", "SCRUB CORRUPT/REPAIRED"}, rows)
	fmt.Fprintln(w, "\nLACKS: chunks written degraded that miss a shard on the node (rebuilt when it answers).")
}
