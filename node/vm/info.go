package vm

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"
)

// Info describes a VM (kvm.info / kvm.list).
type Info struct {
	Name   string `json:"name"`
	State  State  `json:"state"`
	Status string `json:"status,omitempty"` // qemu's run state (query-status), e.g. "running", "paused", "shutdown"
	Exit   string `json:"exit,omitempty"`   // why a stopped VM stopped
	Accel  string `json:"accel"`
	PID    int    `json:"pid,omitempty"`
	// CPU is the vCPU count qemu reports (query-cpus-fast), or the spec's.
	CPU int `json:"cpu"`
	// Memory is the guest RAM in MiB.
	Memory int           `json:"memory"`
	Disks  []DiskInfo    `json:"disks"`
	NICs   []NICInfo     `json:"nics"`
	Uptime time.Duration `json:"uptime"`
	Tags   []string      `json:"tags,omitempty"`
}

// DiskInfo is one disk of a VM.
type DiskInfo struct {
	ID       string  `json:"id"`
	URL      string  `json:"url"`
	Type     string  `json:"type"`
	Bus      string  `json:"bus"`
	ReadOnly bool    `json:"readonly"`
	IOTune   *IOTune `json:"iotune,omitempty"`
	// Node is qemu's block node ("" if qemu does not report the disk).
	Node string `json:"node,omitempty"`
}

// NICInfo is one NIC of a VM.
type NICInfo struct {
	Type   string `json:"type"`
	Bridge string `json:"bridge,omitempty"`
	Tap    string `json:"tap,omitempty"`
	HWAddr string `json:"hwaddr"`
	IP     string `json:"ip,omitempty"`
}

// Info returns the VM's state; for a running VM it asks qemu (query-status,
// query-cpus-fast, query-block).
func (m *Manager) Info(ctx context.Context, name string) (Info, error) {
	v, err := m.get(name)
	if err != nil {
		return Info{}, err
	}
	defer v.mu.Unlock()
	in := Info{Name: name, State: StateStopped, Exit: v.st.Exit, Accel: v.st.Accel, CPU: v.st.Spec.CPU,
		Memory: v.st.Spec.Memory, Tags: v.st.Spec.Tags, Disks: []DiskInfo{}, NICs: []NICInfo{}}
	for _, d := range v.st.Disks {
		in.Disks = append(in.Disks, DiskInfo{ID: d.ID, URL: d.URL, Type: d.Type, Bus: d.Bus, ReadOnly: d.ReadOnly, IOTune: d.IOTune})
	}
	for _, n := range v.st.NICs {
		in.NICs = append(in.NICs, NICInfo(n))
	}
	if v.stopped || v.mon == nil {
		return in, nil
	}
	in.Exit = ""
	in.PID = v.proc.pid
	if t, err := v.proc.startTime(); err == nil {
		in.Uptime = time.Since(t).Truncate(time.Second)
	}
	var st struct {
		Running bool   `json:"running"`
		Status  string `json:"status"`
	}
	exited := func(err error) (Info, error) {
		if !errors.Is(err, ErrNotRunning) {
			return Info{}, fmt.Errorf("vm %s: %w", name, err)
		}
		// qemu exited just now and the watcher has not cleaned up yet: do it
		// here, so that a VM reported stopped has given its leases back.
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		werr := v.proc.wait(wctx)
		cancel()
		if werr != nil {
			return Info{}, fmt.Errorf("vm %s: QMP closed but qemu (pid %d) still runs: %w", name, v.proc.pid, werr)
		}
		m.cleanupLocked(ctx, v, v.exitReason())
		in.State, in.Status, in.PID, in.Uptime, in.Exit = StateStopped, "", 0, 0, v.st.Exit
		return in, nil
	}
	if err := v.mon.run(ctx, "query-status", nil, &st); err != nil {
		return exited(err)
	}
	in.Status = st.Status
	in.State = StateRunning
	if !st.Running {
		in.State = StatePaused
	}
	var cpus []struct {
		Index int `json:"cpu-index"`
	}
	if err := v.mon.run(ctx, "query-cpus-fast", nil, &cpus); err != nil {
		return exited(err)
	}
	in.CPU = len(cpus)
	var blocks []struct {
		QDev     string `json:"qdev"`
		Inserted *struct {
			NodeName string `json:"node-name"`
			BPS      int64  `json:"bps"`
			BPSRd    int64  `json:"bps_rd"`
			BPSWr    int64  `json:"bps_wr"`
			IOPS     int64  `json:"iops"`
			IOPSRd   int64  `json:"iops_rd"`
			IOPSWr   int64  `json:"iops_wr"`
		} `json:"inserted"`
	}
	if err := v.mon.run(ctx, "query-block", nil, &blocks); err != nil {
		return exited(err)
	}
	for _, b := range blocks {
		for i := range in.Disks {
			id := in.Disks[i].ID
			if b.Inserted == nil || !(b.QDev == id || b.QDev == "/machine/peripheral/"+id ||
				strings.HasPrefix(b.QDev, "/machine/peripheral/"+id+"/")) {
				continue
			}
			x := b.Inserted
			in.Disks[i].Node = x.NodeName
			// The limits qemu applies (the source of truth for a running VM).
			t := IOTune{TotalBytesSec: x.BPS, ReadBytesSec: x.BPSRd, WriteBytesSec: x.BPSWr,
				TotalIOPSSec: x.IOPS, ReadIOPSSec: x.IOPSRd, WriteIOPSSec: x.IOPSWr}
			if t == (IOTune{}) {
				in.Disks[i].IOTune = nil
			} else {
				in.Disks[i].IOTune = &t
			}
		}
	}
	return in, nil
}

// List returns every VM, sorted by name.
func (m *Manager) List(ctx context.Context) ([]Info, error) {
	m.mu.Lock()
	names := make([]string, 0, len(m.vms))
	for n := range m.vms {
		names = append(names, n)
	}
	m.mu.Unlock()
	sort.Strings(names)
	out := make([]Info, 0, len(names))
	for _, n := range names {
		in, err := m.Info(ctx, n)
		if err != nil {
			continue // destroyed meanwhile, or stopped under us
		}
		out = append(out, in)
	}
	return out, nil
}
