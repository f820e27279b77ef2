package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/zosproject/zos/blockd/vdiskapi"
	"github.com/zosproject/zos/internal/guest"
	"github.com/zosproject/zos/node/agent/client"
	"github.com/zosproject/zos/node/vm"
	orchclient "github.com/zosproject/zos/orchestrator/client"
)

// VMConfig configures the VM benchmark.
type VMConfig struct {
	// Binary is the zos binary: the VMs run under a real `zos node`.
	Binary string
	// Rounds is the number of boots per target (default 3).
	Rounds int
	// Clones is the number of VMs cloned from one template (default 10).
	Clones int
	Log    io.Writer
}

// VMBoot is one target's boot figures: kvm.create until the guest's
// userspace on its ext4 root prints its first line (ROOT-INIT).
type VMBoot struct {
	Target string        `json:"target"`
	Boots  int           `json:"boots"`
	Mean   time.Duration `json:"mean"`
	Min    time.Duration `json:"min"`
	// Speed is the qemu-nbd anchor's mean boot time over this target's
	// (1 = as fast, > 1 faster).
	Speed float64 `json:"speed"`
}

// VMStorage compares the bytes stored for Clones VMs cloned from one
// template snapshot, each booted once (its guest writes a file), with
// Clones full copies of the template.
type VMStorage struct {
	Clones int `json:"clones"`
	// Template is the shard bytes the template's import added to the store.
	Template int64 `json:"template_bytes"`
	// Stored is the shard bytes the clones added after they all booted.
	Stored int64 `json:"stored_bytes"`
	// Copies is Clones × Template: what ten independent images would cost.
	Copies int64 `json:"copies_bytes"`
	// Ratio is Copies / Stored.
	Ratio float64 `json:"ratio"`
}

// VMReport is the VM benchmark's result.
type VMReport struct {
	Accel   string    `json:"accel"`
	Boot    []VMBoot  `json:"boot"`
	Storage VMStorage `json:"storage"`
}

// VM measures VMs on vdisks through a real node's kvm.*: boot to the
// guest's userspace (the Debian kernel, an ext4 busybox root on vda) from
// a vdisk cloned from a template snapshot vs the same image as a raw file
// served by qemu-nbd (same node, same qemu arguments; rounds alternate),
// and the store bytes of Clones VMs cloned from one template vs Clones
// copies.
func VM(ctx context.Context, cfg VMConfig) (*VMReport, error) {
	if cfg.Rounds <= 0 {
		cfg.Rounds = 3
	}
	if cfg.Clones <= 0 {
		cfg.Clones = 10
	}
	if cfg.Log == nil {
		cfg.Log = io.Discard
	}
	for _, b := range []string{"qemu-system-x86_64", "qemu-nbd", "busybox", "cpio", "mkfs.ext4"} {
		if _, err := exec.LookPath(b); err != nil {
			return nil, fmt.Errorf("bench vm needs %s: %w", b, err)
		}
	}
	kernel, modDir, err := guest.Kernel()
	if err != nil {
		return nil, err
	}
	initrd, err := guest.BuildInitrd(modDir)
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(filepath.Dir(initrd))
	dir, err := os.MkdirTemp("", "zos-bench-vm-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	img, err := guest.RootFS(dir, 64)
	if err != nil {
		return nil, err
	}

	addr, token, stop, err := startAgent(ctx, AgentConfig{Binary: cfg.Binary, Log: cfg.Log})
	if err != nil {
		return nil, err
	}
	defer stop()
	host, _, _ := net.SplitHostPort(addr)
	api := orchclient.New("http://"+net.JoinHostPort(host, "5000"), token)
	ac := client.New(addr, token)
	defer ac.Close()
	// Whatever happens, no VM outlives the benchmark's node.
	defer func() {
		l, _ := ac.KVMList(context.Background())
		for _, in := range l {
			ac.KVM(context.Background(), "kvm.destroy", in.Name)
		}
	}()

	stored := func() (int64, error) {
		st, err := api.StoreStatus(ctx, false)
		return st.Bytes, err
	}
	s0, err := stored()
	if err != nil {
		return nil, err
	}
	f, err := os.Open(img)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	_, err = api.CreateVDiskFromImage(ctx, vdiskapi.CreateRequest{Name: "tmpl", Type: "boot", Size: vdiskapi.Size(fi.Size())}, f)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("import the template: %w", err)
	}
	if _, err := api.Snapshot(ctx, "tmpl", "v1"); err != nil {
		return nil, err
	}
	s1, err := stored()
	if err != nil {
		return nil, err
	}

	// The anchor: the same image as a raw file through qemu-nbd.
	anchorImg := filepath.Join(dir, "anchor.raw")
	if out, err := exec.Command("cp", "--sparse=always", img, anchorImg).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("cp: %v: %s", err, out)
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	nbd := exec.Command("qemu-nbd", "-f", "raw", "-x", "root", "-b", "127.0.0.1", "-p", fmt.Sprint(port), "-t", "-e", "8", anchorImg)
	nbd.Stderr = cfg.Log
	if err := nbd.Start(); err != nil {
		return nil, err
	}
	defer func() { nbd.Process.Kill(); nbd.Wait() }()
	anchorURL := fmt.Sprintf("nbd://127.0.0.1:%d/root", port)
	for i := 0; ; i++ {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			c.Close()
			break
		}
		if i > 300 {
			return nil, fmt.Errorf("qemu-nbd did not come up: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}

	var accel string
	boot := func(name, url string) (time.Duration, error) {
		s := vm.Spec{Name: name, CPU: 1, Memory: 256, Media: []vm.Media{{URL: url}}, Kernel: kernel, Initrd: initrd,
			Cmdline: guest.Cmdline("root", name)}
		start := time.Now()
		in, err := ac.KVMCreate(ctx, s)
		if err != nil {
			return 0, err
		}
		accel = in.Accel
		cctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
		defer cancel()
		var took time.Duration
		err = ac.KVMConsole(cctx, name, true, func(line string) {
			if took == 0 && strings.Contains(line, "ROOT-INIT:") {
				took = time.Since(start)
				cancel()
			}
		})
		if took == 0 {
			return 0, fmt.Errorf("vm %s: the guest's userspace never printed ROOT-INIT: %v", name, err)
		}
		// The guest writes /hello and powers off; wait for it, then destroy.
		for deadline := time.Now().Add(5 * time.Minute); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
			if in, err := ac.KVMInfo(ctx, name); err != nil || in.State == vm.StateStopped {
				break
			}
		}
		return took, ac.KVM(ctx, "kvm.destroy", name)
	}

	times := map[string][]time.Duration{}
	for r := 0; r < cfg.Rounds; r++ {
		order := []string{"zos", "qemu-nbd"}
		if r%2 == 1 {
			order = []string{"qemu-nbd", "zos"}
		}
		for _, target := range order {
			var d time.Duration
			var err error
			if target == "zos" {
				name := fmt.Sprintf("boot%d", r)
				if _, err := api.Clone(ctx, "tmpl", "v1", name, ""); err != nil {
					return nil, err
				}
				d, err = boot(name, name)
			} else {
				d, err = boot(fmt.Sprintf("anchor%d", r), anchorURL)
			}
			if err != nil {
				return nil, err
			}
			fmt.Fprintf(cfg.Log, "bench vm: %s boot %d: %v\n", target, r, d.Round(time.Millisecond))
			times[target] = append(times[target], d)
		}
	}
	rep := &VMReport{}
	mean := func(ds []time.Duration) (m, lo time.Duration) {
		for i, d := range ds {
			m += d
			if i == 0 || d < lo {
				lo = d
			}
		}
		return m / time.Duration(len(ds)), lo
	}
	am, _ := mean(times["qemu-nbd"])
	for _, target := range []string{"zos", "qemu-nbd"} {
		m, lo := mean(times[target])
		rep.Boot = append(rep.Boot, VMBoot{Target: target, Boots: len(times[target]), Mean: m, Min: lo, Speed: float64(am) / float64(m)})
	}

	// Clones VMs from one template, each booted once.
	for i := 0; i < cfg.Clones; i++ {
		name := fmt.Sprintf("vm%d", i)
		if _, err := api.Clone(ctx, "tmpl", "v1", name, ""); err != nil {
			return nil, err
		}
		if _, err := boot(name, name); err != nil {
			return nil, err
		}
	}
	s2, err := stored()
	if err != nil {
		return nil, err
	}
	st := VMStorage{Clones: cfg.Clones, Template: s1 - s0, Stored: s2 - s1}
	st.Copies = int64(cfg.Clones) * st.Template
	if st.Stored > 0 {
		st.Ratio = float64(st.Copies) / float64(st.Stored)
	}
	if st.Template <= 0 {
		return nil, errors.New("bench vm: the template added no bytes to the store")
	}
	rep.Storage, rep.Accel = st, accel
	return rep, nil
}
