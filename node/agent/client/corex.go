package client

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"time"

	"github.com/zosproject/zos/node/agent"
	"github.com/zosproject/zos/node/agent/corex"
)

// ContainerCreate runs corex.create and returns the new container's id.
func (c *Client) ContainerCreate(ctx context.Context, a corex.CreateArgs) (uint32, error) {
	var id uint32
	err := c.JSON(ctx, "corex.create", a, &id)
	return id, err
}

// ContainerList runs corex.list (corex.find when tags are given), by id.
func (c *Client) ContainerList(ctx context.Context, tags ...string) ([]*corex.Info, error) {
	var m map[string]*corex.Info
	var err error
	if len(tags) > 0 {
		err = c.JSON(ctx, "corex.find", corex.FindArgs{Tags: tags}, &m)
	} else {
		err = c.JSON(ctx, "corex.list", nil, &m)
	}
	if err != nil {
		return nil, err
	}
	out := make([]*corex.Info, 0, len(m))
	for _, ct := range m {
		out = append(out, ct)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// ContainerGet runs corex.get; ref is an id or a name.
func (c *Client) ContainerGet(ctx context.Context, ref string) (*corex.Info, error) {
	var ct corex.Info
	if err := c.JSON(ctx, "corex.get", corex.ContainerArgs{Container: corex.Ref(ref)}, &ct); err != nil {
		return nil, err
	}
	return &ct, nil
}

// ContainerTerminate runs corex.terminate.
func (c *Client) ContainerTerminate(ctx context.Context, ref string) error {
	return c.JSON(ctx, "corex.terminate", corex.ContainerArgs{Container: corex.Ref(ref)}, nil)
}

// ContainerExec runs a core.system command in container ref through
// corex.dispatch and returns the job's result (streams, code, state).
func (c *Client) ContainerExec(ctx context.Context, ref string, args []string, timeout time.Duration) (agent.JobResult, error) {
	if len(args) == 0 {
		return agent.JobResult{}, fmt.Errorf("no command")
	}
	sys, _ := json.Marshal(agent.SystemArgs{Name: args[0], Args: args[1:]})
	a, _ := json.Marshal(corex.DispatchArgs{Container: corex.Ref(ref), Command: agent.Command{Command: "core.system", Arguments: sys}})
	return c.Run(ctx, agent.Command{Command: "corex.dispatch", Arguments: a}, timeout)
}

// ContainerPortAdd runs corex.portforward-add.
func (c *Client) ContainerPortAdd(ctx context.Context, ref, hostPort string, containerPort uint16) error {
	return c.JSON(ctx, "corex.portforward-add", corex.PortArgs{Container: corex.Ref(ref), HostPort: hostPort, ContainerPort: containerPort}, nil)
}

// ContainerPortRemove runs corex.portforward-remove.
func (c *Client) ContainerPortRemove(ctx context.Context, ref, hostPort string) error {
	return c.JSON(ctx, "corex.portforward-remove", corex.PortArgs{Container: corex.Ref(ref), HostPort: hostPort}, nil)
}

// ContainerLogs submits corex.logs (streamed) and returns the job id to
// Stream; with follow it runs until the container's process exits or the
// job is killed.
func (c *Client) ContainerLogs(ctx context.Context, ref string, follow bool) (string, error) {
	a, _ := json.Marshal(corex.LogsArgs{Container: corex.Ref(ref), Follow: follow})
	return c.Submit(ctx, agent.Command{Command: "corex.logs", Arguments: a, Stream: true})
}

// RefOf is the Ref of an id.
func RefOf(id uint32) string { return strconv.FormatUint(uint64(id), 10) }
