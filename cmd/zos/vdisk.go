package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/zosproject/zos/blockd"
	"github.com/zosproject/zos/blockd/vdiskapi"
	"github.com/zosproject/zos/internal/size"
	"github.com/zosproject/zos/orchestrator/client"
)

// newVDiskCmd is `zos vdisk …`: the vdisk operations of the HTTP API.
func newVDiskCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "vdisk", Short: "Virtual disks served over NBD (uses ZOS_ADDR, ZOS_TOKEN)",
		Long: `Virtual disks live in the cluster's chunk store and are served by every node over NBD on
port 10809: nbd://NODE:10809/NAME (read-write, one node at a time), NAME:ro (read-only view of
the head) and NAME@SNAPSHOT (a snapshot, read-only). Sizes accept bytes or 512M, 10G, 1T.`}
	cmd.AddCommand(vdiskCreateCmd(), vdiskListCmd(), vdiskInfoCmd(), vdiskDeleteCmd(), vdiskResizeCmd(),
		vdiskSnapshotCmd(), vdiskSnapshotsCmd(), vdiskRollbackCmd(), vdiskCloneCmd(), vdiskExportCmd(),
		vdiskImportCmd(), vdiskDiffCmd())
	return cmd
}

func vdiskCreateCmd() *cobra.Command {
	c := &cobra.Command{Use: "create NAME --size SIZE [--block-size B] [--type boot|db|cache|tmp] [--from NAME@SNAP | --image FILE.raw]",
		Short: "Create a vdisk: empty, a clone of a snapshot, or from a raw image", Args: cobra.ExactArgs(1)}
	sizeFlag := c.Flags().String("size", "", "size (bytes or 10G, 512M…); with --image defaults to the image size, with --from to the snapshot's")
	bs := c.Flags().String("block-size", "", "block size, a power of two from 4K to 1M (default 16K)")
	typ := c.Flags().String("type", "", "boot, db, cache or tmp (default db; boot with --from)")
	pool := c.Flags().String("pool", "", "storage pool (default: default)")
	from := c.Flags().String("from", "", "clone this snapshot (NAME@SNAP): copy-on-write, instant")
	image := c.Flags().String("image", "", "fill the vdisk from this raw image file (zero blocks are not stored)")
	out := addOutputFlag(c)
	c.RunE = func(cmd *cobra.Command, args []string) error {
		name := args[0]
		var sz, bsz int64
		var err error
		if *sizeFlag != "" {
			if sz, err = size.Parse(*sizeFlag); err != nil {
				return err
			}
		}
		if *bs != "" {
			if bsz, err = size.Parse(*bs); err != nil {
				return err
			}
		}
		if *from != "" && *image != "" {
			return errors.New("give --from or --image, not both")
		}
		cl := client.FromEnv()
		req := vdiskapi.CreateRequest{Name: name, Size: vdiskapi.Size(sz), BlockSize: vdiskapi.Size(bsz), Type: *typ, Pool: *pool, From: *from}
		var info blockd.VDiskInfo
		if *image != "" {
			body, size, done, err := openProgress("import "+name, *image)
			if err != nil {
				return err
			}
			if req.Size == 0 {
				req.Size = vdiskapi.Size((size + 511) &^ 511)
			}
			info, err = cl.CreateVDiskFromImage(cmd.Context(), req, body)
			done()
			if err != nil {
				return err
			}
		} else {
			info, err = cl.CreateVDisk(cmd.Context(), req)
		}
		if err != nil {
			return err
		}
		return output(*out, cmd.OutOrStdout(), info, func() { printVDisk(cmd, info) })
	}
	return c
}

func vdiskListCmd() *cobra.Command {
	c := &cobra.Command{Use: "list", Aliases: []string{"ls"}, Short: "List vdisks", Args: cobra.NoArgs}
	out := addOutputFlag(c)
	c.RunE = func(cmd *cobra.Command, args []string) error {
		list, err := client.FromEnv().VDisks(cmd.Context())
		if err != nil {
			return err
		}
		return output(*out, cmd.OutOrStdout(), list, func() {
			var rows [][]string
			for _, v := range list {
				att := v.AttachedTo
				if att == "" {
					att = "-"
				}
				rows = append(rows, []string{v.Name, v.Type, humanBytes(v.Size), humanBytes(v.BlockSize), strconv.Itoa(len(v.Snapshots)), att, orDash(v.Parent)})
			}
			table(cmd.OutOrStdout(), []string{"NAME", "TYPE", "SIZE", "BLOCK", "SNAPSHOTS", "ATTACHED", "PARENT"}, rows)
		})
	}
	return c
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func printVDisk(cmd *cobra.Command, v blockd.VDiskInfo) {
	w := cmd.OutOrStdout()
	fmt.Fprintf(w, "name:        %s\n", v.Name)
	fmt.Fprintf(w, "type:        %s (pool %s)\n", v.Type, v.Pool)
	fmt.Fprintf(w, "size:        %s (%d bytes)\n", humanBytes(v.Size), v.Size)
	fmt.Fprintf(w, "block size:  %s\n", humanBytes(v.BlockSize))
	if v.Allocated > 0 {
		fmt.Fprintf(w, "allocated:   %s\n", humanBytes(v.Allocated))
	}
	fmt.Fprintf(w, "head:        %s (generation %d)\n", orDash(v.Head), v.Generation)
	if v.Parent != "" {
		fmt.Fprintf(w, "parent:      %s\n", v.Parent)
	}
	if v.AttachedTo != "" {
		fmt.Fprintf(w, "attached:    read-write on %s (lease epoch %d)\n", v.AttachedTo, v.LeaseEpoch)
	} else {
		fmt.Fprintf(w, "attached:    no\n")
		if v.Unreplayed {
			fmt.Fprintf(w, "journal:     writes of a failed writer not yet replayed (the next attach, snapshot or export replays them)\n")
		}
	}
	if t := v.Takeover; t != nil {
		to := "its new lease"
		if t.Written {
			to = "the first write on " + t.Node
		}
		fmt.Fprintf(w, "takeover:    %s (epoch %d) -> %s (epoch %d) at %s: %.1fs from %s's last lease renewal to %s\n",
			t.From, t.FromEpoch, t.Node, t.Epoch, t.At.Format(time.RFC3339), t.Seconds, t.From, to)
	}
	fmt.Fprintf(w, "created:     %s\n", v.Created.Format(time.RFC3339))
	fmt.Fprintf(w, "snapshots:   %d\n", len(v.Snapshots))
	for _, s := range v.Snapshots {
		fmt.Fprintf(w, "  %s  %s  %s\n", s.Name, humanBytes(s.Size), s.Created.Format(time.RFC3339))
	}
}

func vdiskInfoCmd() *cobra.Command {
	c := &cobra.Command{Use: "info NAME", Short: "Show a vdisk", Args: cobra.ExactArgs(1)}
	out := addOutputFlag(c)
	c.RunE = func(cmd *cobra.Command, args []string) error {
		info, err := client.FromEnv().VDisk(cmd.Context(), args[0])
		if err != nil {
			return err
		}
		return output(*out, cmd.OutOrStdout(), info, func() { printVDisk(cmd, info) })
	}
	return c
}

func vdiskDeleteCmd() *cobra.Command {
	c := &cobra.Command{Use: "delete NAME", Aliases: []string{"rm"}, Short: "Delete a vdisk and its snapshots", Args: cobra.ExactArgs(1)}
	force := c.Flags().Bool("force", false, "delete even while attached read-write")
	c.RunE = func(cmd *cobra.Command, args []string) error {
		if err := client.FromEnv().DeleteVDisk(cmd.Context(), args[0], *force); err != nil {
			return err
		}
		fmt.Fprintf(cmd.OutOrStdout(), "deleted %s\n", args[0])
		return nil
	}
	return c
}

func vdiskResizeCmd() *cobra.Command {
	c := &cobra.Command{Use: "resize NAME SIZE", Short: "Grow a vdisk (shrinking needs --force and discards the end)", Args: cobra.ExactArgs(2)}
	force := c.Flags().Bool("force", false, "allow shrinking (the data past the new end is lost)")
	c.RunE = func(cmd *cobra.Command, args []string) error {
		sz, err := size.Parse(args[1])
		if err != nil {
			return err
		}
		info, err := client.FromEnv().ResizeVDisk(cmd.Context(), args[0], vdiskapi.Size(sz), *force)
		if err != nil {
			return err
		}
		fmt.Fprintf(cmd.OutOrStdout(), "%s is now %s\n", info.Name, humanBytes(info.Size))
		return nil
	}
	return c
}

func vdiskSnapshotCmd() *cobra.Command {
	c := &cobra.Command{Use: "snapshot NAME SNAP", Short: "Take a snapshot (O(1)); `snapshot delete NAME SNAP` removes one", Args: cobra.ExactArgs(2)}
	c.RunE = func(cmd *cobra.Command, args []string) error {
		sn, err := client.FromEnv().Snapshot(cmd.Context(), args[0], args[1])
		if err != nil {
			return err
		}
		fmt.Fprintf(cmd.OutOrStdout(), "snapshot %s@%s taken\n", args[0], sn.Name)
		return nil
	}
	del := &cobra.Command{Use: "delete NAME SNAP", Short: "Delete a snapshot", Args: cobra.ExactArgs(2)}
	del.RunE = func(cmd *cobra.Command, args []string) error {
		if err := client.FromEnv().DeleteSnapshot(cmd.Context(), args[0], args[1]); err != nil {
			return err
		}
		fmt.Fprintf(cmd.OutOrStdout(), "snapshot %s@%s deleted\n", args[0], args[1])
		return nil
	}
	c.AddCommand(del)
	return c
}

func vdiskSnapshotsCmd() *cobra.Command {
	c := &cobra.Command{Use: "snapshots NAME", Short: "List a vdisk's snapshots", Args: cobra.ExactArgs(1)}
	out := addOutputFlag(c)
	c.RunE = func(cmd *cobra.Command, args []string) error {
		list, err := client.FromEnv().Snapshots(cmd.Context(), args[0])
		if err != nil {
			return err
		}
		return output(*out, cmd.OutOrStdout(), list, func() {
			var rows [][]string
			for _, s := range list {
				rows = append(rows, []string{s.Name, humanBytes(s.Size), s.Created.Format(time.RFC3339)})
			}
			table(cmd.OutOrStdout(), []string{"SNAPSHOT", "SIZE", "CREATED"}, rows)
		})
	}
	return c
}

func vdiskRollbackCmd() *cobra.Command {
	c := &cobra.Command{Use: "rollback NAME SNAP", Short: "Set a vdisk back to a snapshot (not while attached read-write)", Args: cobra.ExactArgs(2)}
	c.RunE = func(cmd *cobra.Command, args []string) error {
		if _, err := client.FromEnv().Rollback(cmd.Context(), args[0], args[1]); err != nil {
			return err
		}
		fmt.Fprintf(cmd.OutOrStdout(), "%s rolled back to %s\n", args[0], args[1])
		return nil
	}
	return c
}

func vdiskCloneCmd() *cobra.Command {
	c := &cobra.Command{Use: "clone NAME@SNAP NEW", Short: "Clone a snapshot into a new vdisk (O(1), copy-on-write)", Args: cobra.ExactArgs(2)}
	typ := c.Flags().String("type", "", "type of the clone (default: the origin's)")
	c.RunE = func(cmd *cobra.Command, args []string) error {
		src, snap, err := blockd.ParseSnapshotRef(args[0])
		if err != nil {
			return err
		}
		info, err := client.FromEnv().Clone(cmd.Context(), src, snap, args[1], *typ)
		if err != nil {
			return err
		}
		fmt.Fprintf(cmd.OutOrStdout(), "%s cloned from %s\n", info.Name, info.Parent)
		return nil
	}
	return c
}

func vdiskExportCmd() *cobra.Command {
	c := &cobra.Command{Use: "export NAME[@SNAP] -o FILE.raw", Short: "Export a vdisk or snapshot as a raw image (holes stay sparse; - for stdout)", Args: cobra.ExactArgs(1)}
	outFile := c.Flags().StringP("output", "o", "", "file to write (- for stdout)")
	c.MarkFlagRequired("output")
	c.RunE = func(cmd *cobra.Command, args []string) error {
		name, snap, _ := strings.Cut(args[0], "@")
		img, size, err := client.FromEnv().Export(cmd.Context(), name, snap)
		if err != nil {
			return err
		}
		defer img.Close()
		var w io.Writer = cmd.OutOrStdout()
		var f *os.File
		if *outFile != "-" {
			if f, err = os.Create(*outFile); err != nil {
				return err
			}
			defer f.Close()
			w = &sparseWriter{f: f}
		}
		body, done := progressReader("export "+args[0], img, size)
		n, err := io.CopyBuffer(w, body, make([]byte, 1<<20))
		done()
		if err != nil {
			return fmt.Errorf("export %s: %w (after %d bytes)", args[0], err, n)
		}
		if size >= 0 && n != size {
			return fmt.Errorf("export %s: got %d of %d bytes", args[0], n, size)
		}
		if f != nil {
			if err := f.Truncate(n); err != nil { // the trailing holes
				return err
			}
			if err := f.Sync(); err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "exported %s to %s (%s)\n", args[0], *outFile, humanBytes(n))
		}
		return nil
	}
	return c
}

func vdiskImportCmd() *cobra.Command {
	c := &cobra.Command{Use: "import NAME FILE.raw", Short: "Replace a vdisk's content with a raw image (not while attached read-write)", Args: cobra.ExactArgs(2)}
	c.RunE = func(cmd *cobra.Command, args []string) error {
		body, size, done, err := openProgress("import "+args[0], args[1])
		if err != nil {
			return err
		}
		info, err := client.FromEnv().Import(cmd.Context(), args[0], body)
		done()
		if err != nil {
			return err
		}
		fmt.Fprintf(cmd.OutOrStdout(), "imported %s into %s (%s allocated)\n", humanBytes(size), info.Name, humanBytes(info.Allocated))
		return nil
	}
	return c
}

func vdiskDiffCmd() *cobra.Command {
	c := &cobra.Command{Use: "diff NAME@A NAME[@B]", Short: "Byte ranges that changed between two snapshots (NAME alone is the current head)", Args: cobra.ExactArgs(2)}
	out := addOutputFlag(c)
	c.RunE = func(cmd *cobra.Command, args []string) error {
		na, a, _ := strings.Cut(args[0], "@")
		nb, b, _ := strings.Cut(args[1], "@")
		if na != nb {
			return fmt.Errorf("diff compares two versions of one vdisk: %s and %s differ", na, nb)
		}
		d, err := client.FromEnv().Diff(cmd.Context(), na, a, b)
		if err != nil {
			return err
		}
		return output(*out, cmd.OutOrStdout(), d, func() {
			var rows [][]string
			var total int64
			for _, r := range d.Ranges {
				kind := "data"
				if r.Zero {
					kind = "zero"
				}
				rows = append(rows, []string{strconv.FormatInt(r.Offset, 10), strconv.FormatInt(r.Length, 10), kind})
				total += r.Length
			}
			table(cmd.OutOrStdout(), []string{"OFFSET", "LENGTH", "NEW"}, rows)
			fmt.Fprintf(cmd.OutOrStdout(), "%d ranges, %s changed\n", len(d.Ranges), humanBytes(total))
		})
	}
	return c
}

// sparseWriter writes to a new file, skipping zero pieces so the holes of
// an exported vdisk stay holes (the caller truncates the file to its size).
type sparseWriter struct {
	f   *os.File
	off int64
}

var zero64K = make([]byte, 64<<10)

func (s *sparseWriter) Write(p []byte) (int, error) {
	total := len(p)
	for len(p) > 0 {
		k := min(len(p), len(zero64K))
		if bytes.Equal(p[:k], zero64K[:k]) {
			s.off += int64(k)
			p = p[k:]
			continue
		}
		n, err := s.f.WriteAt(p[:k], s.off)
		s.off += int64(n)
		if err != nil {
			return total - len(p) + n, err
		}
		p = p[k:]
	}
	return total, nil
}
