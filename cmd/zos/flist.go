package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/flist"
	"github.com/zosproject/zos/flist/cache"
	ffuse "github.com/zosproject/zos/flist/fuse"
	"github.com/zosproject/zos/flist/hub"
	"github.com/zosproject/zos/internal/size"
	"github.com/zosproject/zos/orchestrator/client"
	"golang.org/x/term"
)

// newFlistCmd is `zos flist`: build, inspect, publish and mount flists.
// Chunks live in the cluster reached at ZOS_ADDR (default
// https://127.0.0.1:5000; ZOS_CACERT the cluster CA) with ZOS_TOKEN for writes, through the hub API.
func newFlistCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "flist",
		Short: "Build, inspect, publish and mount flists (uses ZOS_ADDR, ZOS_TOKEN)",
		Long: `An flist is a small immutable file describing a directory tree whose file
contents live as chunks in the cluster. FLIST arguments are a local file
(NAME.flist), a published flist (REPO/NAME) or a URL (http://HOST:5000/REPO/NAME.flist).
The cluster is reached at $ZOS_ADDR (default https://127.0.0.1:5000, trusting
$ZOS_CACERT); writes need $ZOS_TOKEN.`,
	}
	cmd.AddCommand(flistCreateCmd(), flistUploadCmd(), flistLsCmd(), flistStatCmd(), flistCatCmd(), flistInspectCmd(),
		flistMergeCmd(), flistDiffCmd(), flistListCmd(), flistDeleteCmd(), flistMountCmd())
	return cmd
}

// flistClient is the hub client for ZOS_ADDR / ZOS_TOKEN.
func flistClient() *hub.Client { return client.FromEnv().Hub() }

// openFlistArg opens an flist named by a local path, REPO/NAME or URL.
func openFlistArg(ctx context.Context, arg string) (*flist.Reader, chunkstore.Fetcher, error) {
	return flistClient().OpenArg(ctx, arg)
}

// publish registers the flist file at path as push (REPO/NAME).
func publish(ctx context.Context, w io.Writer, c *hub.Client, push, path string) error {
	repo, name, err := hub.SplitRepoName(push)
	if err != nil {
		return fmt.Errorf("--push: %w", err)
	}
	res, err := c.UploadFlistFile(ctx, repo, name, path)
	if err != nil {
		return fmt.Errorf("--push: %w", err)
	}
	fmt.Fprintf(w, "published %s (%s)\n", res.Flist, res.Entry.Ref)
	return nil
}

// buildProgress shows a progress bar on a terminal, log lines otherwise.
func buildProgress(what string) (func(flist.Progress), func()) {
	if term.IsTerminal(int(os.Stderr.Fd())) {
		var bar *progressbar.ProgressBar
		return func(p flist.Progress) {
				if bar == nil {
					max := p.TotalBytes
					bar = progressbar.NewOptions64(max,
						progressbar.OptionSetWriter(os.Stderr),
						progressbar.OptionSetDescription(what),
						progressbar.OptionShowBytes(true),
						progressbar.OptionShowCount(),
						progressbar.OptionThrottle(100*time.Millisecond),
						progressbar.OptionClearOnFinish())
				}
				if p.TotalBytes > 0 {
					_ = bar.Set64(p.InputBytes)
				} else {
					_ = bar.Set64(p.Bytes)
				}
				bar.Describe(fmt.Sprintf("%s: %d files", what, p.Files))
			}, func() {
				if bar != nil {
					_ = bar.Finish()
				}
			}
	}
	last := time.Now()
	return func(p flist.Progress) {
		if !p.Done && time.Since(last) < 5*time.Second {
			return
		}
		last = time.Now()
		attrs := []any{"files", p.Files, "bytes", humanBytes(p.Bytes)}
		if p.TotalBytes > 0 {
			attrs = append(attrs, "input", fmt.Sprintf("%.0f%%", 100*float64(p.InputBytes)/float64(p.TotalBytes)))
		}
		slog.Info(what, attrs...)
	}, func() {}
}

func parseChunking(s string) (flist.Chunking, error) {
	switch {
	case s == "" || s == "fastcdc":
		return flist.DefaultChunking, nil
	case strings.HasPrefix(s, "fixed"):
		n := int64(1 << 20)
		if _, arg, ok := strings.Cut(s, ":"); ok {
			var err error
			if n, err = size.Parse(arg); err != nil {
				return flist.Chunking{}, err
			}
		}
		c := flist.FixedChunking(int(n))
		return c, c.Validate()
	}
	return flist.Chunking{}, fmt.Errorf("--chunking %q: want fastcdc or fixed[:SIZE]", s)
}

func flistCreateCmd() *cobra.Command {
	var out, push, chunking, platform, image string
	var allowDevices bool
	var labels []string
	var parallel int
	cmd := &cobra.Command{
		Use:   "create SRC -o NAME.flist",
		Short: "Build an flist from a directory, tar(.gz/.zst), OCI layout or docker save archive",
		Long: `Build an flist. SRC is a directory, a tar / tar.gz / tar.zst file, an OCI
image layout directory, a docker save archive, or "-" for an archive on stdin.
File chunks are stored in the cluster at $ZOS_ADDR (needs $ZOS_TOKEN); the
flist file is written to -o, and --push REPO/NAME also publishes it.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if out == "" {
				return errors.New("-o NAME.flist is required")
			}
			ch, err := parseChunking(chunking)
			if err != nil {
				return err
			}
			if push != "" {
				if _, _, err := hub.SplitRepoName(push); err != nil {
					return fmt.Errorf("--push: %w", err)
				}
			}
			hc := flistClient()
			lbl := map[string]string{}
			for _, l := range labels {
				k, v, ok := strings.Cut(l, "=")
				if !ok {
					return fmt.Errorf("--label %q: want KEY=VALUE", l)
				}
				lbl[k] = v
			}
			progress, done := buildProgress("building " + args[0])
			opts := &flist.Options{Store: hc, Chunking: ch, AllowDevices: allowDevices, Concurrency: parallel,
				Progress: progress, Labels: lbl, Platform: platform, Image: image}
			start := time.Now()
			var tr *flist.Tree
			var kind flist.Kind
			if args[0] == "-" {
				tr, kind, err = flist.BuildStream(ctx, os.Stdin, "stdin", opts)
			} else {
				tr, kind, err = flist.Build(ctx, args[0], opts)
			}
			done()
			if err != nil {
				return err
			}
			meta, err := tr.WriteFile(out)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "%s: %s from %s (%s): %d files, %s in %d chunks (%s unique), %s\n", out, meta.Chunking, args[0], kind,
				meta.Stats.Files, humanBytes(meta.Stats.Bytes), meta.Stats.Chunks, humanBytes(meta.Stats.UniqueBytes), time.Since(start).Round(time.Millisecond))
			if push == "" {
				return nil
			}
			return publish(ctx, w, hc, push, out)
		},
	}
	cmd.Flags().StringVarP(&out, "output", "o", "", "flist file to write")
	cmd.Flags().StringVar(&push, "push", "", "also publish as REPO/NAME")
	cmd.Flags().StringVar(&chunking, "chunking", "fastcdc", "fastcdc (content-defined, 256K/1M/4M) or fixed[:SIZE]")
	cmd.Flags().BoolVar(&allowDevices, "allow-devices", true, "keep device nodes (the hub refuses them from non-admins)")
	cmd.Flags().StringArrayVar(&labels, "label", nil, "KEY=VALUE label (repeatable)")
	cmd.Flags().StringVar(&platform, "platform", "", "OS/ARCH to pick from a multi-platform image")
	cmd.Flags().StringVar(&image, "image", "", "image name/tag to pick from an archive holding several")
	cmd.Flags().IntVar(&parallel, "parallel", 8, "chunk uploads in flight")
	return cmd
}

func flistUploadCmd() *cobra.Command {
	var name, repo string
	cmd := &cobra.Command{
		Use:   "upload ARCHIVE",
		Short: "Send an archive (tar.gz, docker save, ...) to the hub to be converted server-side",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := os.Open(args[0])
			if err != nil {
				return err
			}
			defer f.Close()
			if name == "" {
				name = hub.NameFromFile(args[0])
			}
			res, err := flistClient().UploadArchive(cmd.Context(), repo, name, filepath.Base(args[0]), f)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "published %s (%s, %d files, %s)\n", res.Flist, res.Kind, res.Stats.Files, humanBytes(res.Stats.Bytes))
			return nil
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "flist name (default: from the file name)")
	cmd.Flags().StringVar(&repo, "repo", "", "repository (default: the token's own; others need admin)")
	return cmd
}

// lsRow is one line of ls / stat output.
type lsRow struct {
	Path   string            `json:"path"`
	Type   string            `json:"type"`
	Mode   string            `json:"mode"`
	UID    uint32            `json:"uid"`
	GID    uint32            `json:"gid"`
	Size   int64             `json:"size"`
	Mtime  time.Time         `json:"mtime"`
	Target string            `json:"target,omitempty"`
	Nlink  uint32            `json:"nlink"`
	Ino    uint64            `json:"ino"`
	Rdev   uint64            `json:"rdev,omitempty"`
	Xattrs map[string]string `json:"xattrs,omitempty"`
	Chunks []flist.Chunk     `json:"chunks,omitempty"`
}

func toRow(e flist.Entry) lsRow {
	r := lsRow{Path: "/" + e.Path, Type: flist.TypeName(e.Mode), Mode: e.FileMode().String(), UID: e.UID, GID: e.GID,
		Size: e.Size, Mtime: e.Mtime, Target: e.Target, Nlink: e.Nlink, Ino: uint64(e.Ino), Rdev: e.Rdev}
	if len(e.Xattrs) > 0 {
		r.Xattrs = map[string]string{}
		for _, x := range e.Xattrs {
			r.Xattrs[x.Name] = string(x.Value)
		}
	}
	return r
}

func flistLsCmd() *cobra.Command {
	var recursive bool
	var format *string
	cmd := &cobra.Command{
		Use:   "ls FLIST [PATH]",
		Short: "List a directory of an flist",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, _, err := openFlistArg(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			defer r.Close()
			p := "/"
			if len(args) == 2 {
				p = args[1]
			}
			var rows []lsRow
			if recursive {
				base, err := r.Resolve(p)
				if err != nil {
					return err
				}
				parts, _ := flist.SplitPath(p)
				prefix := strings.Join(parts, "/")
				err = r.Walk(func(e flist.Entry) error {
					if prefix != "" && e.Path != prefix && !strings.HasPrefix(e.Path, prefix+"/") {
						if e.IsDir() && !strings.HasPrefix(prefix, e.Path+"/") && e.Path != "" {
							return flist.SkipDir
						}
						return nil
					}
					rows = append(rows, toRow(e))
					return nil
				})
				_ = base
				if err != nil {
					return err
				}
			} else {
				ents, err := r.List(p)
				if err != nil {
					return err
				}
				for _, e := range ents {
					rows = append(rows, toRow(e))
				}
			}
			return output(*format, cmd.OutOrStdout(), rows, func() {
				var tr [][]string
				for _, x := range rows {
					name := x.Path
					if x.Target != "" {
						name += " -> " + x.Target
					}
					tr = append(tr, []string{x.Mode, strconv.Itoa(int(x.Nlink)), strconv.Itoa(int(x.UID)), strconv.Itoa(int(x.GID)),
						strconv.FormatInt(x.Size, 10), x.Mtime.Format("2006-01-02 15:04"), name})
				}
				table(cmd.OutOrStdout(), []string{"MODE", "LINKS", "UID", "GID", "SIZE", "MTIME", "PATH"}, tr)
			})
		},
	}
	cmd.Flags().BoolVarP(&recursive, "recursive", "R", false, "list the whole subtree")
	format = addOutputFlag(cmd)
	return cmd
}

func flistStatCmd() *cobra.Command {
	var format *string
	cmd := &cobra.Command{
		Use:   "stat FLIST PATH",
		Short: "Show one entry's metadata and chunk list",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, _, err := openFlistArg(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			defer r.Close()
			in, err := r.Resolve(args[1])
			if err != nil {
				return err
			}
			parts, _ := flist.SplitPath(args[1])
			row := toRow(flist.Entry{Path: strings.Join(parts, "/"), Inode: in})
			if in.IsRegular() {
				if row.Chunks, err = r.Chunks(in.Ino); err != nil {
					return err
				}
			}
			return output(*format, cmd.OutOrStdout(), row, func() {
				w := cmd.OutOrStdout()
				fmt.Fprintf(w, "  Path: %s\n  Type: %s\n  Mode: %s (%04o)\n   Uid: %d\n   Gid: %d\n  Size: %d\n Links: %d\n Inode: %d\n",
					row.Path, row.Type, row.Mode, in.Mode&flist.PermMask, row.UID, row.GID, row.Size, row.Nlink, row.Ino)
				fmt.Fprintf(w, "Access: %s\nModify: %s\nChange: %s\n", in.Atime.Format(time.RFC3339Nano), in.Mtime.Format(time.RFC3339Nano), in.Ctime.Format(time.RFC3339Nano))
				if row.Target != "" {
					fmt.Fprintf(w, "Target: %s\n", row.Target)
				}
				if row.Rdev != 0 {
					fmt.Fprintf(w, "  Rdev: %d:%d\n", row.Rdev>>8&0xfff, row.Rdev&0xff|row.Rdev>>12&0xfff00)
				}
				for k, v := range row.Xattrs {
					fmt.Fprintf(w, " Xattr: %s=%q\n", k, v)
				}
				for _, c := range row.Chunks {
					fmt.Fprintf(w, " Chunk: %12d %8d %s\n", c.Offset, c.Size, c.Ref)
				}
			})
		},
	}
	format = addOutputFlag(cmd)
	return cmd
}

func flistCatCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "cat FLIST PATH",
		Short: "Write a file's content to stdout (chunks fetched from the cluster and verified)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, f, err := openFlistArg(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			defer r.Close()
			return r.Cat(cmd.Context(), f, args[1], cmd.OutOrStdout())
		},
	}
}

func flistInspectCmd() *cobra.Command {
	var format *string
	cmd := &cobra.Command{
		Use:   "inspect FLIST",
		Short: "Show an flist's metadata: image config, sizes, file and chunk counts",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, _, err := openFlistArg(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			defer r.Close()
			info := r.Inspect()
			return output(*format, cmd.OutOrStdout(), info, func() {
				w := cmd.OutOrStdout()
				st := info.Stats
				fmt.Fprintf(w, "Source:     %s\nCreated:    %s\nBuilder:    %s (format %d)\nChunking:   %s\n", info.Source, info.Created.Format(time.RFC3339), info.Builder, info.Format, info.Chunking)
				fmt.Fprintf(w, "Flist file: %s\nContent:    %s in %d files (%d dirs, %d symlinks, %d devices, %d other, %d extra hard links)\n",
					humanBytes(info.FileSize), humanBytes(st.Bytes), st.Files, st.Dirs, st.Symlinks, st.Devices, st.Others, st.HardLinks)
				fmt.Fprintf(w, "Chunks:     %d (%d unique, %s)\n", st.Chunks, st.UniqueChunks, humanBytes(st.UniqueBytes))
				if img := info.Image; img != nil {
					fmt.Fprintf(w, "Entrypoint: %q\nCmd:        %q\nEnv:        %q\nWorkingDir: %s\n", img.Entrypoint, img.Cmd, img.Env, img.WorkingDir)
					if img.User != "" {
						fmt.Fprintf(w, "User:       %s\n", img.User)
					}
				}
				for k, v := range info.Labels {
					fmt.Fprintf(w, "Label:      %s=%s\n", k, v)
				}
			})
		},
	}
	format = addOutputFlag(cmd)
	return cmd
}

func flistMergeCmd() *cobra.Command {
	var out, push string
	cmd := &cobra.Command{
		Use:   "merge A B... -o C.flist",
		Short: "Merge flists (the first that has a path wins it)",
		Args:  cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" {
				return errors.New("-o C.flist is required")
			}
			var trees []*flist.Tree
			for _, a := range args {
				r, _, err := openFlistArg(cmd.Context(), a)
				if err != nil {
					return err
				}
				t, err := r.Tree()
				r.Close()
				if err != nil {
					return err
				}
				if t.Meta.Source == "" {
					t.Meta.Source = a
				}
				trees = append(trees, t)
			}
			m, err := flist.Merge(trees...)
			if err != nil {
				return err
			}
			meta, err := m.WriteFile(out)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: %d files, %s\n", out, meta.Stats.Files, humanBytes(meta.Stats.Bytes))
			if push == "" {
				return nil
			}
			return publish(cmd.Context(), cmd.OutOrStdout(), flistClient(), push, out)
		},
	}
	cmd.Flags().StringVarP(&out, "output", "o", "", "flist file to write")
	cmd.Flags().StringVar(&push, "push", "", "also publish as REPO/NAME")
	return cmd
}

func flistDiffCmd() *cobra.Command {
	var format *string
	cmd := &cobra.Command{
		Use:   "diff A B",
		Short: "Show paths added, removed and changed from flist A to flist B",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			a, _, err := openFlistArg(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			defer a.Close()
			b, _, err := openFlistArg(cmd.Context(), args[1])
			if err != nil {
				return err
			}
			defer b.Close()
			changes, err := flist.Diff(a, b)
			if err != nil {
				return err
			}
			if changes == nil {
				changes = []flist.Change{}
			}
			return output(*format, cmd.OutOrStdout(), changes, func() {
				w := cmd.OutOrStdout()
				for _, c := range changes {
					mark := map[flist.ChangeKind]string{flist.Added: "+", flist.Removed: "-", flist.Changed: "M"}[c.Kind]
					if len(c.Fields) > 0 {
						fmt.Fprintf(w, "%s %s (%s)\n", mark, c.Path, strings.Join(c.Fields, ","))
					} else {
						fmt.Fprintf(w, "%s %s\n", mark, c.Path)
					}
				}
			})
		},
	}
	format = addOutputFlag(cmd)
	return cmd
}

func flistListCmd() *cobra.Command {
	var format *string
	cmd := &cobra.Command{
		Use:   "list [REPO]",
		Short: "List repositories, or the flists published in one",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c := flistClient()
			if len(args) == 0 {
				repos, err := c.ListRepos(cmd.Context())
				if err != nil {
					return err
				}
				return output(*format, cmd.OutOrStdout(), repos, func() {
					for _, r := range repos {
						fmt.Fprintln(cmd.OutOrStdout(), r)
					}
				})
			}
			es, err := c.List(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return output(*format, cmd.OutOrStdout(), es, func() {
				var rows [][]string
				for _, e := range es {
					rows = append(rows, []string{e.Repo + "/" + e.Name + ".flist", strconv.FormatUint(e.Stats.Files, 10),
						humanBytes(e.Stats.Bytes), e.Owner, e.Created.Format("2006-01-02 15:04"), e.Ref.Short()})
				}
				table(cmd.OutOrStdout(), []string{"FLIST", "FILES", "SIZE", "OWNER", "CREATED", "REF"}, rows)
			})
		},
	}
	format = addOutputFlag(cmd)
	return cmd
}

func flistDeleteCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "delete REPO/NAME",
		Short: "Unpublish an flist (its chunks are collected when nothing references them)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			repo, name, err := hub.SplitRepoName(args[0])
			if err != nil {
				return err
			}
			if err := flistClient().Delete(cmd.Context(), repo, name); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "deleted %s/%s.flist\n", repo, name)
			return nil
		},
	}
}

func defaultCacheDir() string {
	if os.Geteuid() == 0 {
		return "/var/cache/zos/chunks"
	}
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "zos", "chunks")
	}
	return filepath.Join(os.TempDir(), "zos-chunks")
}

func flistMountCmd() *cobra.Command {
	var rw, noPassthrough, debug bool
	var overlayDir, cacheDir, cacheSize string
	var timeout time.Duration
	var readahead int
	cmd := &cobra.Command{
		Use:   "mount FLIST MOUNTPOINT",
		Short: "Mount an flist (REPO/NAME, FILE.flist or http://HOST:5000/REPO/NAME.flist) in the foreground",
		Long: `Mount an flist read-only (or with --rw, a writable overlay whose writes stay in
--overlay-dir and never reach the store). File chunks are fetched on first
read, verified and kept in the node's shared cache. Runs until SIGINT/SIGTERM
or until the mountpoint is unmounted.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			max, err := size.Parse(cacheSize)
			if err != nil {
				return fmt.Errorf("--cache-size: %w", err)
			}
			r, fetcher, err := openFlistArg(ctx, args[0])
			if err != nil {
				return err
			}
			defer r.Close()
			c, err := cache.Open(cache.Config{Dir: cacheDir, MaxBytes: max})
			if err != nil {
				return err
			}
			defer c.Close()
			m, err := ffuse.Mount(ffuse.Config{
				Mountpoint: args[1], Flist: r, Store: fetcher, Cache: c, FetchTimeout: timeout, Readahead: readahead,
				DisablePassthrough: noPassthrough, RW: rw, OverlayDir: overlayDir, Name: "zos-flist:" + args[0], Debug: debug,
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "mounted %s at %s (rw=%v, passthrough=%v); ready\n", args[0], m.Dir(), rw, m.Passthrough())
			select {
			case <-ctx.Done():
			case <-m.Done():
				fmt.Fprintf(cmd.OutOrStdout(), "%s was unmounted\n", m.Dir())
				return nil
			}
			uctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := m.Unmount(uctx); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "unmounted %s\n", m.Dir())
			return nil
		},
	}
	cmd.Flags().BoolVar(&rw, "rw", false, "add a writable overlay")
	cmd.Flags().StringVar(&overlayDir, "overlay-dir", "", "where overlay writes go with --rw (default: a temporary dir removed at unmount)")
	cmd.Flags().StringVar(&cacheDir, "cache-dir", defaultCacheDir(), "shared chunk cache directory")
	cmd.Flags().StringVar(&cacheSize, "cache-size", "4G", "chunk cache bound")
	cmd.Flags().DurationVar(&timeout, "fetch-timeout", 30*time.Second, "reads fail with EIO when the store does not answer within this")
	cmd.Flags().IntVar(&readahead, "readahead", 4, "chunks fetched ahead of sequential readers")
	cmd.Flags().BoolVar(&noPassthrough, "no-passthrough", false, "do not let the kernel serve fully cached files directly")
	cmd.Flags().BoolVar(&debug, "debug", false, "log every FUSE request")
	return cmd
}
