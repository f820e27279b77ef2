package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/zosproject/zos/node"
	"github.com/zosproject/zos/node/agent"
	"github.com/zosproject/zos/node/agent/client"
	"github.com/zosproject/zos/node/agent/info"
	"github.com/zosproject/zos/orchestrator"
	orchclient "github.com/zosproject/zos/orchestrator/client"
)

// exitError makes zos exit with a job's code.
type exitError struct{ code int }

func (e *exitError) Error() string { return fmt.Sprintf("job exited with code %d", e.code) }

// ExitCode is what main exits with.
func (e *exitError) ExitCode() int { return e.code }

// agentAddr resolves NODE: host:port, an IP (port 6379) or a node id
// looked up in the cluster map (ZOS_ADDR).
func agentAddr(ctx context.Context, nodeArg string) (string, error) {
	if _, _, err := net.SplitHostPort(nodeArg); err == nil {
		return nodeArg, nil
	}
	if ip := net.ParseIP(nodeArg); ip != nil || nodeArg == "localhost" {
		return net.JoinHostPort(nodeArg, strconv.Itoa(node.DefaultRESPPort)), nil
	}
	var ns []orchestrator.NodeStatus
	if err := orchclient.FromEnv().Do(ctx, http.MethodGet, "/api/v1/nodes", nil, &ns); err != nil {
		return "", fmt.Errorf("resolve node %s: %w", nodeArg, err)
	}
	for _, n := range ns {
		if n.ID == nodeArg {
			if n.RESPAddr == "" {
				return "", fmt.Errorf("node %s has no RESP address in the cluster map", nodeArg)
			}
			return n.RESPAddr, nil
		}
	}
	return "", fmt.Errorf("no node %s in the cluster (want a node id, IP or host:port)", nodeArg)
}

func agentClient(ctx context.Context, nodeArg string) (*client.Client, error) {
	addr, err := agentAddr(ctx, nodeArg)
	if err != nil {
		return nil, err
	}
	return client.New(addr, os.Getenv("ZOS_TOKEN")), nil
}

func newJobCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "job", Short: "Run and manage jobs on a node's agent (0-core protocol; token from ZOS_TOKEN)"}
	cmd.AddCommand(newJobRunCmd(), newJobListCmd(), newJobKillCmd())
	return cmd
}

func newJobRunCmd() *cobra.Command {
	var maxTime int
	var queue, id, dir string
	var env []string
	cmd := &cobra.Command{
		Use:   "run NODE -- CMD [ARGS...]",
		Short: "Run a process on NODE, streaming its output; exits with its code",
		Long: `Run CMD on NODE (a node id, an IP or host:port of its RESP endpoint) as a
core.system job: its stdout and stderr are streamed here as they happen, and
zos exits with the job's exit code. Interrupting zos detaches: the job keeps
running on the node (zos job kill NODE ID stops it).

  zos job run n-1a2b3c -- uname -a
  zos job run 127.0.0.1:6379 --max-time 10 -- sh -c 'sleep 1; echo done'`,
		Args: cobra.MinimumNArgs(2),
		RunE: func(c *cobra.Command, args []string) error {
			ctx := c.Context()
			ac, err := agentClient(ctx, args[0])
			if err != nil {
				return err
			}
			defer ac.Close()
			envMap := map[string]string{}
			for _, kv := range env {
				k, v, ok := strings.Cut(kv, "=")
				if !ok {
					return fmt.Errorf("--env %q: want KEY=VALUE", kv)
				}
				envMap[k] = v
			}
			a, _ := json.Marshal(agent.SystemArgs{Name: args[1], Args: args[2:], Dir: dir, Env: envMap})
			if id == "" {
				id = client.NewID()
			}
			if _, err := ac.Submit(ctx, agent.Command{ID: id, Command: "core.system", Arguments: a, Stream: true,
				MaxTime: maxTime, Queue: queue}); err != nil {
				return err
			}
			out, errOut := c.OutOrStdout(), c.ErrOrStderr()
			if _, err := ac.Stream(ctx, id, func(level int, msg string) {
				if level == agent.LevelStderr {
					fmt.Fprintln(errOut, msg)
				} else if level != agent.LevelResult {
					fmt.Fprintln(out, msg)
				}
			}); err != nil {
				if ctx.Err() != nil {
					return fmt.Errorf("detached; job %s keeps running (zos job kill %s %s)", id, args[0], id)
				}
				return err
			}
			r, err := ac.Result(ctx, id, time.Minute)
			if err != nil {
				return err
			}
			if r.State == agent.StateSuccess {
				return nil
			}
			if r.State != agent.StateError {
				fmt.Fprintf(errOut, "zos: job %s: %s: %s\n", id, r.State, r.Data)
			}
			if r.Code > 0 && r.Code < 256 {
				return &exitError{code: r.Code}
			}
			return fmt.Errorf("job %s: %s (code %d): %s", id, r.State, r.Code, r.Data)
		},
	}
	cmd.Flags().IntVar(&maxTime, "max-time", 0, "kill the job after this many seconds (0: never)")
	cmd.Flags().StringVar(&queue, "queue", "", "run after the other jobs of this queue")
	cmd.Flags().StringVar(&id, "id", "", "job id (default: random)")
	cmd.Flags().StringVar(&dir, "dir", "", "working directory on the node")
	cmd.Flags().StringArrayVar(&env, "env", nil, "KEY=VALUE added to the environment (repeatable)")
	return cmd
}

func newJobListCmd() *cobra.Command {
	var format *string
	cmd := &cobra.Command{
		Use:   "list NODE [ID]",
		Short: "List the jobs running or scheduled on NODE",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(c *cobra.Command, args []string) error {
			ac, err := agentClient(c.Context(), args[0])
			if err != nil {
				return err
			}
			defer ac.Close()
			var a agent.JobArgs
			if len(args) == 2 {
				a.ID = args[1]
			}
			var jobs []agent.JobInfo
			if err := ac.JSON(c.Context(), "job.list", a, &jobs); err != nil {
				return err
			}
			return output(*format, c.OutOrStdout(), jobs, func() {
				var rows [][]string
				for _, j := range jobs {
					what := j.Cmd.Command
					if j.Cmd.Command == "core.system" || j.Cmd.Command == "bash" {
						what += " " + string(j.Cmd.Arguments)
					}
					if len(what) > 60 {
						what = what[:57] + "..."
					}
					rows = append(rows, []string{j.Cmd.ID, what, time.UnixMilli(j.StartTime).Format("15:04:05"),
						strconv.Itoa(j.PID), fmt.Sprintf("%.1f", j.CPU), humanBytes(int64(j.RSS))})
				}
				table(c.OutOrStdout(), []string{"ID", "COMMAND", "STARTED", "PID", "CPU%", "RSS"}, rows)
			})
		},
	}
	format = addOutputFlag(cmd)
	return cmd
}

func newJobKillCmd() *cobra.Command {
	var signal int
	cmd := &cobra.Command{
		Use:   "kill NODE ID",
		Short: "Kill a job (its whole process group) on NODE",
		Args:  cobra.ExactArgs(2),
		RunE: func(c *cobra.Command, args []string) error {
			ac, err := agentClient(c.Context(), args[0])
			if err != nil {
				return err
			}
			defer ac.Close()
			if err := ac.JSON(c.Context(), "job.kill", agent.KillArgs{ID: args[1], Signal: signal}, nil); err != nil {
				return err
			}
			fmt.Fprintf(c.OutOrStdout(), "killed %s\n", args[1])
			return nil
		},
	}
	cmd.Flags().IntVar(&signal, "signal", 15, "signal to send")
	return cmd
}

// nodeInfo is what zos node info shows.
type nodeInfo struct {
	OS      info.OSInfo       `json:"os"`
	CPU     []info.CPUInfo    `json:"cpu"`
	Mem     info.MemInfo      `json:"mem"`
	Disk    []info.DiskUsage  `json:"disk"`
	NIC     []info.NIC        `json:"nic"`
	Version map[string]string `json:"version"`
}

func newNodeInfoCmd() *cobra.Command {
	var format *string
	cmd := &cobra.Command{
		Use:   "info NODE",
		Short: "Show a node's host: OS, CPUs, memory, disks, NICs (from its agent)",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			ctx := c.Context()
			ac, err := agentClient(ctx, args[0])
			if err != nil {
				return err
			}
			defer ac.Close()
			var ni nodeInfo
			for _, q := range []struct {
				cmd string
				out any
			}{{"info.os", &ni.OS}, {"info.cpu", &ni.CPU}, {"info.mem", &ni.Mem}, {"info.disk", &ni.Disk}, {"info.nic", &ni.NIC}, {"info.version", &ni.Version}} {
				if err := ac.JSON(ctx, q.cmd, nil, q.out); err != nil {
					return err
				}
			}
			return output(*format, c.OutOrStdout(), ni, func() {
				w := c.OutOrStdout()
				model := ""
				if len(ni.CPU) > 0 {
					model = ni.CPU[0].ModelName
				}
				fmt.Fprintf(w, "host:     %s (%s, kernel %s, %s)\n", ni.OS.Hostname, ni.OS.Platform, ni.OS.KernelVersion, ni.OS.Arch)
				fmt.Fprintf(w, "uptime:   %s\n", time.Duration(ni.OS.Uptime)*time.Second)
				fmt.Fprintf(w, "agent:    zos %s (%s)\n", ni.Version["version"], ni.Version["go"])
				fmt.Fprintf(w, "cpu:      %d × %s\n", len(ni.CPU), model)
				fmt.Fprintf(w, "memory:   %s total, %s available\n\n", humanBytes(int64(ni.Mem.Total)), humanBytes(int64(ni.Mem.Available)))
				var rows [][]string
				for _, d := range ni.Disk {
					rows = append(rows, []string{d.Device, d.Mountpoint, d.Fstype, humanBytes(int64(d.Total)), fmt.Sprintf("%.0f%%", d.UsedPct)})
				}
				table(w, []string{"DEVICE", "MOUNTPOINT", "FSTYPE", "SIZE", "USED"}, rows)
				fmt.Fprintln(w)
				rows = nil
				sort.Slice(ni.NIC, func(a, b int) bool { return ni.NIC[a].Name < ni.NIC[b].Name })
				for _, n := range ni.NIC {
					rows = append(rows, []string{n.Name, n.Hardware, strconv.Itoa(n.MTU), strings.Join(n.Addrs, " ")})
				}
				table(w, []string{"NIC", "HWADDR", "MTU", "ADDRESSES"}, rows)
			})
		},
	}
	format = addOutputFlag(cmd)
	return cmd
}
