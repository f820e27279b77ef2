package report

import (
	"fmt"
	"math"
	"path"
	"strings"
	"time"
)

// PlotDir is where Write puts the plots, relative to the report directory.
const PlotDir = "plots"

// Markdown renders the report; plots are the plot files' base names (SVG
// and PNG pairs, as returned by plot), linked under prefix.
func (r *Report) Markdown(plots map[string][]string, prefix string) string {
	var b strings.Builder
	b.WriteString("# zos bench report\n\n")
	b.WriteString(r.Head())
	for _, w := range r.Workloads {
		b.WriteString(w.Markdown(plots[w.Name], prefix))
	}
	return b.String()
}

// Head is the report's preamble: machine, command, times, caveats.
func (r *Report) Head() string {
	var b strings.Builder
	fmt.Fprintf(&b, "- machine: %s\n", r.Machine)
	if r.Cluster != "" {
		fmt.Fprintf(&b, "- benchmarked: %s\n", r.Cluster)
	}
	fmt.Fprintf(&b, "- command: `%s`\n", r.Command)
	fmt.Fprintf(&b, "- run: %s → %s (%s)\n", r.Started.Format(time.RFC3339), r.Finished.Format(time.RFC3339), r.Finished.Sub(r.Started).Round(time.Second))
	b.WriteString("- every anchor ran in the same run on the same machine; on a shared or loaded machine only the ratios mean anything (ratio > 1: zos is better)\n")
	for _, n := range r.Notes {
		fmt.Fprintf(&b, "- %s\n", n)
	}
	b.WriteString("\n")
	return b.String()
}

// Markdown renders one workload: what it measures, a table of every job on
// every target, and its plots.
func (w Workload) Markdown(plots []string, prefix string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "## %s\n\n%s\n\n", w.Name, w.Measures)
	hasLat, hasCPU := false, false
	for _, j := range w.Jobs {
		for _, x := range j.Results {
			hasLat = hasLat || x.Latency != nil
			hasCPU = hasCPU || x.CPU > 0
		}
	}
	cpuHead, cpuRule := "", ""
	if hasCPU {
		cpuHead, cpuRule = " CPU busy |", "---:|"
	}
	if hasLat {
		b.WriteString("| job | target | figure | p50 | p99 | p99.9 |" + cpuHead + " zos vs it |\n|---|---|---:|---:|---:|---:|" + cpuRule + "---:|\n")
	} else {
		b.WriteString("| job | target | figure |" + cpuHead + " zos vs it |\n|---|---|---:|" + cpuRule + "---:|\n")
	}
	for _, j := range w.Jobs {
		for _, x := range j.Results {
			name := x.Target
			if !x.Anchor {
				name = "**" + name + "**"
			}
			if x.Note != "" {
				name += " (" + x.Note + ")"
			}
			ratio := "—"
			if x.Anchor && x.Ratio > 0 {
				ratio = fmt.Sprintf("%.2f×", x.Ratio)
			}
			fig := Format(x.Value) + " " + j.Unit
			if j.OpsUnit != "" && x.OpsPerSec > 0 {
				fig += " (" + Format(x.OpsPerSec) + " " + j.OpsUnit + ")"
			}
			cpu := ""
			if hasCPU {
				cpu = " — |"
				if x.CPU > 0 {
					cpu = fmt.Sprintf(" %.2f cores |", x.CPU)
				}
			}
			if hasLat {
				l := x.Latency
				if l == nil {
					l = &Latency{}
				}
				fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |%s %s |\n", j.Name, name, fig, us(l.P50), us(l.P99), us(l.P999), cpu, ratio)
			} else {
				fmt.Fprintf(&b, "| %s | %s | %s |%s %s |\n", j.Name, name, fig, cpu, ratio)
			}
		}
	}
	b.WriteString("\n")
	if len(w.Events) > 0 {
		b.WriteString("Events:")
		for _, e := range w.Events {
			fmt.Fprintf(&b, " %s at %.1fs;", e.Label, e.T)
		}
		b.WriteString("\n\n")
	}
	for _, n := range w.Notes {
		fmt.Fprintf(&b, "- %s\n", n)
	}
	if len(w.Notes) > 0 {
		b.WriteString("\n")
	}
	for _, p := range plots {
		fmt.Fprintf(&b, "![%s](%s.svg) ", p, path.Join(prefix, p))
	}
	if len(plots) > 0 {
		b.WriteString("\n\n")
		b.WriteString("PNG:")
		for _, p := range plots {
			fmt.Fprintf(&b, " [%s](%s.png)", p, path.Join(prefix, p))
		}
		b.WriteString("\n\n")
	}
	return b.String()
}

func us(v float64) string {
	if v == 0 {
		return "—"
	}
	return (time.Duration(v * float64(time.Microsecond))).Round(time.Microsecond).String()
}

// Format prints a figure with three significant digits (no exponent).
func Format(v float64) string {
	switch a := math.Abs(v); {
	case a == 0:
		return "0"
	case a >= 100:
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	case a >= 1:
		return fmt.Sprintf("%.2f", v)
	default:
		return fmt.Sprintf("%.3g", v)
	}
}
