package report

import (
	"bufio"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	"github.com/zosproject/zos/internal/size"
)

// Machine is what the figures were measured on, read from /proc and /sys.
type Machine struct {
	Hostname string `json:"hostname"`
	CPU      string `json:"cpu"`
	Cores    int    `json:"cores"`
	Kernel   string `json:"kernel"`
	MemBytes int64  `json:"mem_bytes"`
	// Dir is the directory the workloads kept their data in; Mount, FS,
	// Device and Disk describe the file system and disk under it.
	Dir    string `json:"dir"`
	Mount  string `json:"mount"`
	FS     string `json:"fs"`
	Device string `json:"device"`
	Disk   string `json:"disk"`
	Go     string `json:"go"`
}

// String is one line for a report's head.
func (m Machine) String() string {
	disk := m.Disk
	if disk == "" {
		disk = m.Device
	}
	return strings.TrimSpace(m.CPU + ", " + strconv.Itoa(m.Cores) + " cores, " + humanBytes(m.MemBytes) + " RAM, Linux " + m.Kernel +
		"; data on " + m.FS + " (" + m.Mount + ", " + disk + ")")
}

// Probe reads the machine's description; dir is where data is written.
func Probe(dir string) Machine {
	m := Machine{Cores: runtime.NumCPU(), Go: runtime.Version(), Dir: dir}
	m.Hostname, _ = os.Hostname()
	m.Kernel = readTrim("/proc/sys/kernel/osrelease")
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	if f, err := os.Open("/proc/meminfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if fs := strings.Fields(sc.Text()); len(fs) >= 2 && fs[0] == "MemTotal:" {
				kb, _ := strconv.ParseInt(fs[1], 10, 64)
				m.MemBytes = kb << 10
				break
			}
		}
		f.Close()
	}
	if abs, err := filepath.EvalSymlinks(dir); err == nil {
		dir = abs
	}
	// The longest mount point above dir (/proc/self/mounts: dev mnt fs …).
	if f, err := os.Open("/proc/self/mounts"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fs := strings.Fields(sc.Text())
			if len(fs) < 3 {
				continue
			}
			mnt := fs[1]
			if (dir == mnt || strings.HasPrefix(dir, strings.TrimRight(mnt, "/")+"/")) && len(mnt) >= len(m.Mount) {
				m.Mount, m.Device, m.FS = mnt, fs[0], fs[2]
			}
		}
		f.Close()
	}
	m.Disk = diskModel(m.Device)
	return m
}

// diskModel returns the model of the block device dev (/dev/vda1 → the
// model of vda), or "".
func diskModel(dev string) string {
	if !strings.HasPrefix(dev, "/dev/") {
		return ""
	}
	if p, err := filepath.EvalSymlinks(dev); err == nil {
		dev = p
	}
	name := filepath.Base(dev)
	sys := filepath.Join("/sys/class/block", name)
	if _, err := os.Stat(filepath.Join(sys, "partition")); err == nil {
		if p, err := filepath.EvalSymlinks(sys); err == nil {
			sys = filepath.Dir(p)
			name = filepath.Base(sys)
		}
	}
	model := readTrim(filepath.Join(sys, "device/model"))
	if model == "" {
		model = readTrim(filepath.Join(sys, "device/vendor"))
	}
	rot := readTrim(filepath.Join(sys, "queue/rotational"))
	kind := map[string]string{"0": "non-rotational", "1": "rotational"}[rot]
	return strings.TrimSpace(strings.Join(nonEmpty(name, model, kind), " "))
}

func nonEmpty(s ...string) []string {
	var out []string
	for _, x := range s {
		if x != "" {
			out = append(out, x)
		}
	}
	return out
}

func readTrim(p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// humanBytes formats a byte count with binary units.
func humanBytes(n int64) string { return size.Format(n) }
