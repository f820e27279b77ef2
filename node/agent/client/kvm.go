package client

import (
	"context"
	"encoding/json"
	"time"

	"github.com/zosproject/zos/node/agent"
	"github.com/zosproject/zos/node/agent/kvm"
	"github.com/zosproject/zos/node/vm"
)

// KVMCreate runs kvm.create: it returns once qemu runs the guest (or with
// qemu's message).
func (c *Client) KVMCreate(ctx context.Context, s vm.Spec) (vm.Info, error) {
	var in vm.Info
	return in, c.JSON(ctx, "kvm.create", s, &in)
}

// KVMList runs kvm.list.
func (c *Client) KVMList(ctx context.Context) ([]vm.Info, error) {
	var l []vm.Info
	return l, c.JSON(ctx, "kvm.list", struct{}{}, &l)
}

// KVMInfo runs kvm.info.
func (c *Client) KVMInfo(ctx context.Context, name string) (vm.Info, error) {
	var in vm.Info
	return in, c.JSON(ctx, "kvm.info", kvm.NameArgs{Name: name}, &in)
}

// KVMGet runs kvm.get: the VM's spec.
func (c *Client) KVMGet(ctx context.Context, name string) (vm.Spec, error) {
	var s vm.Spec
	return s, c.JSON(ctx, "kvm.get", kvm.NameArgs{Name: name}, &s)
}

// KVM runs a kvm command that takes only the VM's name: kvm.destroy,
// kvm.pause, kvm.resume, kvm.reset, kvm.reboot, kvm.start.
func (c *Client) KVM(ctx context.Context, command, name string) error {
	return c.JSON(ctx, command, kvm.NameArgs{Name: name}, nil)
}

// KVMShutdown runs kvm.shutdown: ACPI power-off, qemu killed after
// timeoutSec (0: the agent's default). It reports whether it was killed.
func (c *Client) KVMShutdown(ctx context.Context, name string, timeoutSec int) (bool, error) {
	var r kvm.ShutdownResult
	return r.Killed, c.JSON(ctx, "kvm.shutdown", kvm.ShutdownArgs{Name: name, Timeout: timeoutSec}, &r)
}

// KVMAttachDisk runs kvm.attach_disk and returns the new disk's id.
func (c *Client) KVMAttachDisk(ctx context.Context, name string, m vm.Media) (string, error) {
	var r kvm.AttachResult
	return r.ID, c.JSON(ctx, "kvm.attach_disk", kvm.DiskArgs{Name: name, Media: &m}, &r)
}

// KVMDetachDisk runs kvm.detach_disk (disk: an id such as disk1, or a URL).
func (c *Client) KVMDetachDisk(ctx context.Context, name, disk string) error {
	return c.JSON(ctx, "kvm.detach_disk", kvm.DiskArgs{Name: name, Disk: disk}, nil)
}

// KVMLimitDiskIO runs kvm.limit_disk_io (a zero IOTune removes the limits).
func (c *Client) KVMLimitDiskIO(ctx context.Context, name, disk string, t vm.IOTune) error {
	return c.JSON(ctx, "kvm.limit_disk_io", kvm.DiskArgs{Name: name, Disk: disk, IOTune: &t}, nil)
}

// KVMConsole streams the VM's serial console log to fn, line by line:
// what is kept, then (with follow) what the guest prints until ctx ends
// or the VM stops. It returns the job's id (job.kill ends a follow).
func (c *Client) KVMConsole(ctx context.Context, name string, follow bool, fn func(line string)) error {
	a, _ := json.Marshal(kvm.ConsoleArgs{Name: name, Follow: follow})
	id := NewID()
	if _, err := c.Submit(ctx, agent.Command{ID: id, Command: "kvm.console", Arguments: a, Stream: true}); err != nil {
		return err
	}
	ok, err := c.Stream(ctx, id, func(level int, msg string) {
		if level == agent.LevelStdout {
			fn(msg)
		}
	})
	if err != nil {
		if ctx.Err() != nil {
			// Stop the follow on the node.
			kctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c.JSON(kctx, "job.kill", map[string]any{"id": id}, nil)
		}
		return err
	}
	if !ok {
		r, err := c.Result(ctx, id, 30*time.Second)
		if err != nil {
			return err
		}
		return &ResultError{R: r}
	}
	return nil
}
