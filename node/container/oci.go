package container

import (
	"fmt"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// specOpt mutates a runtime spec, containerd pkg/oci style: the config is the
// default spec plus a list of small, separately testable options.
type specOpt func(*specs.Spec) error

// defaultCaps is containerd's default capability set for unprivileged
// containers.
var defaultCaps = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
	"CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
	"CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
}

// allCaps is every capability of Linux 6.x, for privileged containers.
var allCaps = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
	"CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
	"CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW",
	"CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT",
	"CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
	"CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
	"CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE",
	"CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ",
	"CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
}

// hostCaps filters caps (names in allCaps order = capability numbers) down
// to the bounding set of this process: runc cannot grant more, and a host
// that runs the agent in a restricted environment may lack some.
func hostCaps(caps []string) []string {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return caps
	}
	var bnd uint64
	found := false
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "CapBnd:"); ok {
			if bnd, err = strconv.ParseUint(strings.TrimSpace(v), 16, 64); err == nil {
				found = true
			}
		}
	}
	if !found {
		return caps
	}
	var out []string
	for _, c := range caps {
		n := slices.Index(allCaps, c)
		if n < 0 || bnd&(1<<n) != 0 {
			out = append(out, c)
		}
	}
	return out
}

// defaultSpec is containerd's populateDefaultUnixSpec, less seccomp.
func defaultSpec() *specs.Spec {
	return &specs.Spec{
		Version: specs.Version,
		Root:    &specs.Root{Path: "rootfs"},
		Process: &specs.Process{
			Cwd:             "/",
			NoNewPrivileges: true,
			Capabilities:    capSet(defaultCaps),
			Rlimits:         []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Hard: 1024, Soft: 1024}},
		},
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
			{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}},
			{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
			{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
			{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
			{Destination: "/sys/fs/cgroup", Type: "cgroup", Source: "cgroup", Options: []string{"ro", "nosuid", "noexec", "nodev"}},
		},
		Linux: &specs.Linux{
			MaskedPaths: []string{
				"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
				"/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware",
				"/sys/devices/virtual/powercap", "/proc/scsi",
			},
			ReadonlyPaths: []string{
				"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
			},
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.PIDNamespace}, {Type: specs.IPCNamespace}, {Type: specs.UTSNamespace},
				{Type: specs.MountNamespace},
			},
			Resources: &specs.LinuxResources{
				Devices: []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}},
			},
		},
	}
}

func capSet(caps []string) *specs.LinuxCapabilities {
	c := hostCaps(caps)
	return &specs.LinuxCapabilities{Bounding: c, Permitted: c, Effective: c}
}

func buildSpec(opts ...specOpt) (*specs.Spec, error) {
	s := defaultSpec()
	for _, o := range opts {
		if err := o(s); err != nil {
			return nil, err
		}
	}
	return s, nil
}

func withRootPath(p string) specOpt {
	return func(s *specs.Spec) error { s.Root.Path = p; return nil }
}

func withProcess(args, env []string, cwd string) specOpt {
	return func(s *specs.Spec) error {
		s.Process.Args, s.Process.Env, s.Process.Cwd = args, env, cwd
		return nil
	}
}

func withHostname(h string) specOpt {
	return func(s *specs.Spec) error { s.Hostname = h; return nil }
}

// withNetNS joins the namespace at path; "" gives a fresh one (loopback only).
func withNetNS(path string) specOpt {
	return func(s *specs.Spec) error {
		s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: path})
		return nil
	}
}

// withPrivileged: every capability, no masked or read-only paths, /sys and
// cgroups writable, every device allowed.
func withPrivileged() specOpt {
	return func(s *specs.Spec) error {
		s.Process.Capabilities = capSet(allCaps)
		s.Process.NoNewPrivileges = false
		s.Linux.MaskedPaths, s.Linux.ReadonlyPaths = nil, nil
		for i := range s.Mounts {
			if s.Mounts[i].Destination == "/sys" || s.Mounts[i].Destination == "/sys/fs/cgroup" {
				var o []string
				for _, x := range s.Mounts[i].Options {
					if x != "ro" {
						o = append(o, x)
					}
				}
				s.Mounts[i].Options = append(o, "rw")
			}
		}
		s.Linux.Resources.Devices = []specs.LinuxDeviceCgroup{{Allow: true, Access: "rwm"}}
		return nil
	}
}

func withMemory(bytes int64) specOpt {
	return func(s *specs.Spec) error {
		if bytes <= 0 {
			return nil
		}
		s.Linux.Resources.Memory = &specs.LinuxMemory{Limit: &bytes}
		return nil
	}
}

// withCPU limits CPU time to cores (CFS quota over a 100 ms period).
func withCPU(cores float64) specOpt {
	return func(s *specs.Spec) error {
		if cores <= 0 {
			return nil
		}
		period := uint64(100000)
		quota := int64(math.Round(cores * float64(period)))
		if quota < 1000 {
			return fmt.Errorf("%w: cpu %v too small", ErrBadSpec, cores)
		}
		s.Linux.Resources.CPU = &specs.LinuxCPU{Period: &period, Quota: &quota}
		return nil
	}
}

func withBinds(binds map[string]string) specOpt {
	return func(s *specs.Spec) error {
		for _, h := range sortedKeys(binds) {
			s.Mounts = append(s.Mounts, specs.Mount{Destination: binds[h], Type: "bind", Source: h, Options: []string{"rbind", "rw"}})
		}
		return nil
	}
}

func withCgroupsPath(p string) specOpt {
	return func(s *specs.Spec) error { s.Linux.CgroupsPath = p; return nil }
}
