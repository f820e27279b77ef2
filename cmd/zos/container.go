package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/zosproject/zos/internal/size"
	"github.com/zosproject/zos/node/agent"
	"github.com/zosproject/zos/node/agent/client"
	"github.com/zosproject/zos/node/agent/corex"
	"github.com/zosproject/zos/node/container"
)

func newContainerCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "container", Short: "Run containers from flists on a node (corex.*; token from ZOS_TOKEN)"}
	cmd.AddCommand(newContainerCreateCmd(), newContainerListCmd(), newContainerExecCmd(), newContainerRmCmd(), newContainerLogsCmd())
	return cmd
}

// parsePort turns [ADDR:]HOST:CONTAINER[/udp|/tcp+udp] into a corex port key
// and the container port.
func parsePort(s string) (string, container.PortNumber, error) {
	spec, proto, _ := strings.Cut(s, "/")
	i := strings.LastIndexByte(spec, ':')
	if i < 0 {
		return "", 0, fmt.Errorf("--port %q: want HOSTPORT:CONTAINERPORT (e.g. 8080:80, 127.0.0.1:8080:80/udp)", s)
	}
	to, err := strconv.ParseUint(spec[i+1:], 10, 16)
	if err != nil || to == 0 {
		return "", 0, fmt.Errorf("--port %q: bad container port", s)
	}
	key := spec[:i]
	if proto != "" {
		key += "|" + proto
	}
	return key, container.PortNumber(to), nil
}

func newContainerCreateCmd() *cobra.Command {
	var a corex.CreateArgs
	var env, ports []string
	var memory string
	var bridgeName string
	cmd := &cobra.Command{
		Use:   "create NODE FLIST [-- CMD [ARGS...]]",
		Short: "Start a container whose root is FLIST (REPO/NAME on the hub, or an http(s)://…/NAME.flist URL)",
		Long: `Start a container on NODE from FLIST: the flist is mounted once on the node
(shared by every container of it) under a writable layer of the container's
own. Without CMD the flist's image entrypoint/cmd runs. Prints the id.

  zos container create n1 library/debian --name web --port 8080:80 -- sleep infinity
  zos container create n1 http://hub:5000/library/nginx.flist --memory 256M --cpu 0.5`,
		Args: cobra.MinimumNArgs(2),
		RunE: func(c *cobra.Command, args []string) error {
			ctx := c.Context()
			a.Root = args[1]
			if dash := c.ArgsLenAtDash(); dash >= 0 && dash < 2 {
				return fmt.Errorf("give NODE and FLIST before --")
			}
			a.Command = args[2:]
			for _, kv := range env {
				k, v, ok := strings.Cut(kv, "=")
				if !ok {
					return fmt.Errorf("--env %q: want KEY=VALUE", kv)
				}
				if a.Env == nil {
					a.Env = map[string]string{}
				}
				a.Env[k] = v
			}
			for _, p := range ports {
				k, to, err := parsePort(p)
				if err != nil {
					return err
				}
				if a.Port == nil {
					a.Port = map[string]container.PortNumber{}
				}
				a.Port[k] = to
			}
			if memory != "" {
				n, err := size.Parse(memory)
				if err != nil {
					return fmt.Errorf("--memory: %w", err)
				}
				a.Cgroups.Memory = container.Bytes(n)
			}
			if bridgeName != "" {
				a.Nics = []corex.Nic{{Type: "bridge", ID: bridgeName}}
			}
			ac, err := agentClient(ctx, args[0])
			if err != nil {
				return err
			}
			defer ac.Close()
			id, err := ac.ContainerCreate(ctx, a)
			if err != nil {
				return err
			}
			fmt.Fprintln(c.OutOrStdout(), id)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&a.Name, "name", "", "container name (default c<ID>)")
	f.StringVar(&a.Hostname, "hostname", "", "host name (default the name)")
	f.StringArrayVar(&env, "env", nil, "KEY=VALUE added to the image's environment (repeatable)")
	f.StringArrayVar(&ports, "port", nil, "forward [ADDR:]HOSTPORT:CONTAINERPORT[/udp|/tcp+udp] (repeatable)")
	f.StringVar(&memory, "memory", "", "memory limit, e.g. 256M")
	f.Float64Var(&a.Cgroups.CPU, "cpu", 0, "CPU limit in cores, e.g. 0.5")
	f.BoolVar(&a.Privileged, "privileged", false, "keep every capability and device")
	f.StringArrayVar(&a.Tags, "tag", nil, "tag (repeatable; corex.find selects by tags)")
	f.StringVar(&bridgeName, "bridge", "", "plug the nic into this bridge (default the node's container bridge)")
	f.StringVar(&a.Dir, "workdir", "", "working directory (default the image's)")
	return cmd
}

func newContainerListCmd() *cobra.Command {
	var format *string
	var tags []string
	cmd := &cobra.Command{
		Use:   "list NODE",
		Short: "List NODE's containers",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			ac, err := agentClient(c.Context(), args[0])
			if err != nil {
				return err
			}
			defer ac.Close()
			cs, err := ac.ContainerList(c.Context(), tags...)
			if err != nil {
				return err
			}
			return output(*format, c.OutOrStdout(), cs, func() {
				var rows [][]string
				for _, ct := range cs {
					var ports []string
					for k, v := range ct.Ports {
						ports = append(ports, k+"→"+strconv.Itoa(int(v)))
					}
					rows = append(rows, []string{strconv.Itoa(int(ct.ID)), ct.Name, ct.Status, ct.IP, ct.Flist,
						strings.Join(ports, ","), strings.Join(ct.Tags, ","), ct.Created.Local().Format("15:04:05")})
				}
				table(c.OutOrStdout(), []string{"ID", "NAME", "STATUS", "IP", "FLIST", "PORTS", "TAGS", "CREATED"}, rows)
			})
		},
	}
	cmd.Flags().StringArrayVar(&tags, "tag", nil, "only containers with this tag (repeatable)")
	format = addOutputFlag(cmd)
	return cmd
}

func newContainerExecCmd() *cobra.Command {
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "exec NODE CONTAINER -- CMD [ARGS...]",
		Short: "Run CMD in a container (corex.dispatch of core.system); exits with its code",
		Args:  cobra.MinimumNArgs(3),
		RunE: func(c *cobra.Command, args []string) error {
			ac, err := agentClient(c.Context(), args[0])
			if err != nil {
				return err
			}
			defer ac.Close()
			r, err := ac.ContainerExec(c.Context(), args[1], args[2:], timeout)
			if err != nil {
				return err
			}
			fmt.Fprint(c.OutOrStdout(), r.Streams[0])
			fmt.Fprint(c.ErrOrStderr(), r.Streams[1])
			if r.State == agent.StateSuccess {
				return nil
			}
			if r.Code > 0 && r.Code < 256 && r.Data == (&agent.ExitError{Code: r.Code}).Error() {
				return &exitError{code: r.Code}
			}
			return &client.ResultError{R: r}
		},
	}
	cmd.Flags().DurationVar(&timeout, "timeout", 10*time.Minute, "give up waiting after this long")
	return cmd
}

func newContainerRmCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "rm NODE CONTAINER...",
		Short: "Terminate containers and remove everything made for them",
		Args:  cobra.MinimumNArgs(2),
		RunE: func(c *cobra.Command, args []string) error {
			ac, err := agentClient(c.Context(), args[0])
			if err != nil {
				return err
			}
			defer ac.Close()
			for _, ref := range args[1:] {
				if err := ac.ContainerTerminate(c.Context(), ref); err != nil {
					return err
				}
			}
			return nil
		},
	}
}

func newContainerLogsCmd() *cobra.Command {
	var follow bool
	cmd := &cobra.Command{
		Use:   "logs NODE CONTAINER",
		Short: "Print a container's output (-f: follow until it exits)",
		Args:  cobra.ExactArgs(2),
		RunE: func(c *cobra.Command, args []string) error {
			ctx := c.Context()
			ac, err := agentClient(ctx, args[0])
			if err != nil {
				return err
			}
			defer ac.Close()
			id, err := ac.ContainerLogs(ctx, args[1], follow)
			if err != nil {
				return err
			}
			out := c.OutOrStdout()
			if _, err := ac.Stream(ctx, id, func(level int, msg string) {
				if level != agent.LevelResult {
					fmt.Fprintln(out, msg)
				}
			}); err != nil {
				if ctx.Err() != nil {
					ac.JSON(context.Background(), "job.kill", agent.KillArgs{ID: id}, nil)
					return nil
				}
				return err
			}
			r, err := ac.Result(ctx, id, time.Minute)
			if err != nil {
				return err
			}
			if r.State != agent.StateSuccess {
				return &client.ResultError{R: r}
			}
			return nil
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing until the container's process exits")
	return cmd
}
