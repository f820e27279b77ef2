package vm

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// disk is one disk as the VM has it (persisted in vm.json).
type disk struct {
	ID       string  `json:"id"`   // qdev id: disk0, disk1, …
	Node     string  `json:"node"` // blockdev node name
	URL      string  `json:"url"`  // canonical NBD URL
	Type     string  `json:"type"` // disk | cdrom
	Bus      string  `json:"bus"`  // virtio | ide
	ReadOnly bool    `json:"readonly"`
	IOTune   *IOTune `json:"iotune,omitempty"`
	target   nbdTarget
}

// nic is one NIC as the VM has it (persisted in vm.json).
type nic struct {
	Type   string `json:"type"`
	Bridge string `json:"bridge,omitempty"`
	Tap    string `json:"tap,omitempty"`
	HWAddr string `json:"hwaddr"`
	IP     string `json:"ip,omitempty"`
}

// files are the per-VM paths under the VM's directory.
type files struct{ dir string }

func (f files) state() string   { return filepath.Join(f.dir, "vm.json") }
func (f files) qmp() string     { return filepath.Join(f.dir, "qmp.sock") }
func (f files) serial() string  { return filepath.Join(f.dir, "console.sock") }
func (f files) console() string { return filepath.Join(f.dir, "console.log") }
func (f files) pid() string     { return filepath.Join(f.dir, "qemu.pid") }
func (f files) stderr() string  { return filepath.Join(f.dir, "qemu.stderr") }

// macFor derives a locally administered MAC from the VM name and NIC index.
func macFor(vm string, i int) string {
	h := sha256.Sum256([]byte(vm + "/" + strconv.Itoa(i)))
	return net.HardwareAddr{0x52, 0x54, h[0], h[1], h[2], h[3]}.String()
}

// qemuArgs is the qemu command line of a VM. The guest starts paused (-S)
// so that the Manager connects the console before the first byte is
// printed; qemu daemonizes once its devices are up (see doc.go).
func qemuArgs(s *Spec, accel string, f files, disks []disk, nics []nic) []string {
	a := []string{
		"-name", "guest=" + s.Name + ",debug-threads=on",
		"-machine", "pc", "-accel", accel,
		"-nodefaults", "-no-user-config", "-display", "none", "-vga", "none",
		"-S", "-daemonize", "-pidfile", f.pid(),
		"-qmp", "unix:" + f.qmp() + ",server=on,wait=off",
		"-chardev", "socket,id=serial0,path=" + f.serial() + ",server=on,wait=off",
		"-serial", "chardev:serial0",
		"-smp", strconv.Itoa(s.CPU), "-m", strconv.Itoa(s.Memory),
	}
	if accel == "kvm" {
		a = append(a, "-cpu", "host")
	}
	if s.Kernel != "" {
		a = append(a, "-kernel", s.Kernel)
		if s.Initrd != "" {
			a = append(a, "-initrd", s.Initrd)
		}
		if s.Cmdline != "" {
			a = append(a, "-append", s.Cmdline)
		}
	}
	ide := 0
	for i, d := range disks {
		a = append(a, "-blockdev", blockdevJSON(d))
		dev := deviceArgs(d, &ide)
		if i == 0 && s.Kernel == "" {
			dev += ",bootindex=1"
		}
		a = append(a, "-device", dev)
	}
	for i, n := range nics {
		id := "net" + strconv.Itoa(i)
		switch n.Type {
		case "bridge":
			a = append(a, "-netdev", "tap,id="+id+",ifname="+n.Tap+",script=no,downscript=no")
		default:
			nd := "user,id=" + id
			ports := make([]string, 0, len(s.Port))
			for h := range s.Port {
				ports = append(ports, h)
			}
			sort.Strings(ports)
			for _, h := range ports {
				nd += fmt.Sprintf(",hostfwd=tcp::%s-:%d", h, s.Port[h])
			}
			a = append(a, "-netdev", nd)
		}
		a = append(a, "-device", "virtio-net-pci,netdev="+id+",id="+id+"-dev,mac="+n.HWAddr+",romfile=")
	}
	return a
}

func blockdevJSON(d disk) string {
	o := d.target.blockdev(d.Node)
	if d.ReadOnly {
		o["read-only"] = true
	}
	b, _ := json.Marshal(o)
	return string(b)
}

// deviceArgs is the -device / device_add driver string of d; ide counts
// IDE units in use.
func deviceArgs(d disk, ide *int) string {
	if d.Bus == "ide" {
		drv := "ide-hd"
		if d.Type == "cdrom" {
			drv = "ide-cd"
		}
		u := *ide
		*ide++
		return fmt.Sprintf("%s,drive=%s,id=%s,bus=ide.%d,unit=%d", drv, d.Node, d.ID, u/2, u%2)
	}
	return "virtio-blk-pci,drive=" + d.Node + ",id=" + d.ID
}

// deviceAddArgs is d as device_add arguments (hot-plug is virtio only).
func deviceAddArgs(d disk) map[string]any {
	return map[string]any{"driver": "virtio-blk-pci", "drive": d.Node, "id": d.ID}
}

func shellQuote(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		if strings.ContainsAny(a, " \"'{}$,") {
			q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		} else {
			q[i] = a
		}
	}
	return strings.Join(q, " ")
}

// blockQDev is the qdev path of the device that owns d's block backend
// (what block_set_io_throttle's "id" wants): for virtio-blk-pci it is the
// virtio backend below the PCI proxy that carries the id.
func (d disk) blockQDev() string {
	if d.Bus == "virtio" {
		return "/machine/peripheral/" + d.ID + "/virtio-backend"
	}
	return d.ID
}
