package main

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"github.com/zosproject/zos/internal/size"
)

// addOutputFlag adds -o/--output (table|json) to a listing command.
func addOutputFlag(cmd *cobra.Command) *string {
	return cmd.Flags().StringP("output", "o", "table", "output format: table or json")
}

// printJSON writes v as indented JSON.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// table prints rows under a header, aligned.
func table(w io.Writer, header []string, rows [][]string) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	tw.Flush()
}

// output renders v as JSON or, for "table", with the given function.
func output(format string, w io.Writer, v any, tbl func()) error {
	switch format {
	case "json":
		return printJSON(w, v)
	case "table", "":
		tbl()
		return nil
	}
	return fmt.Errorf("unknown output format %q: use table or json", format)
}

// humanBytes formats a byte count with binary units.
func humanBytes(n int64) string { return size.Format(n) }

// newLogger builds the daemon logger from --log-level and --log-format.
func newLogger(level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", format)
}

func addLogFlags(cmd *cobra.Command) (level, format *string) {
	level = cmd.Flags().String("log-level", "info", "log level: debug, info, warn, error")
	format = cmd.Flags().String("log-format", "text", "log format: text or json")
	return
}

// sizeValue is a flag holding a byte count written with a binary unit
// ("256M", "4G"; size.Parse).
type sizeValue int64

func (v *sizeValue) String() string {
	if *v == 0 {
		return ""
	}
	return humanBytes(int64(*v))
}

func (v *sizeValue) Set(s string) error {
	n, err := size.Parse(s)
	if err != nil {
		return err
	}
	*v = sizeValue(n)
	return nil
}

func (v *sizeValue) Type() string { return "size" }

// extentValue is a size flag that also takes "off" (stored as -1).
type extentValue int64

func (v *extentValue) String() string {
	switch {
	case *v < 0:
		return "off"
	case *v == 0:
		return ""
	}
	return humanBytes(int64(*v))
}

func (v *extentValue) Set(s string) error {
	if strings.EqualFold(strings.TrimSpace(s), "off") {
		*v = -1
		return nil
	}
	n, err := size.Parse(s)
	if err != nil {
		return err
	}
	*v = extentValue(n)
	return nil
}

func (v *extentValue) Type() string { return "size|off" }
