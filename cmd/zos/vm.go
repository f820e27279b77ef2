package main

import (
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/zosproject/zos/node/agent/client"
	"github.com/zosproject/zos/node/vm"
)

func newVMCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "vm", Short: "Run VMs on a node, booted from vdisks (the agent's kvm.*; token from ZOS_TOKEN)",
		Long: `VMs on a node: qemu driven over QMP by the node's agent, their disks vdisks served
by the node's blockd over NBD (the read-write lease is the VM's while it runs).
NODE is a node id, an IP or host:port of its RESP endpoint.

  zos vdisk snapshot tmpl v1 && zos vdisk clone tmpl@v1 vm1-boot
  zos vm create n1 vm1 --disk vm1-boot --memory 1G --cpu 2 --port 2222:22
  zos vm console n1 vm1 -f
  zos vm attach n1 vm1 data1 && zos vm detach n1 vm1 data1
  zos vm shutdown n1 vm1 && zos vm destroy n1 vm1`}
	cmd.AddCommand(newVMCreateCmd(), newVMListCmd(), newVMInfoCmd(), newVMShutdownCmd(), newVMConsoleCmd(),
		newVMAttachCmd(), newVMDetachCmd(), newVMLimitCmd())
	for _, s := range []struct{ use, cmd, short string }{
		{"destroy", "kvm.destroy", "Stop a VM at once and forget it (its leases released)"},
		{"pause", "kvm.pause", "Pause a VM's vCPUs"},
		{"resume", "kvm.resume", "Resume a paused VM"},
		{"reset", "kvm.reset", "Hard-reset a VM"},
		{"reboot", "kvm.reboot", "Ask a VM's guest to reboot (Ctrl-Alt-Delete)"},
		{"start", "kvm.start", "Boot a stopped VM again"},
	} {
		cmd.AddCommand(&cobra.Command{Use: s.use + " NODE NAME", Short: s.short, Args: cobra.ExactArgs(2),
			RunE: func(c *cobra.Command, args []string) error {
				return withAgent(c, args[0], func(ac *client.Client) error {
					if err := ac.KVM(c.Context(), s.cmd, args[1]); err != nil {
						return err
					}
					fmt.Fprintf(c.OutOrStdout(), "%s: %s\n", args[1], s.use)
					return nil
				})
			}})
	}
	return cmd
}

func withAgent(c *cobra.Command, node string, f func(*client.Client) error) error {
	ac, err := agentClient(c.Context(), node)
	if err != nil {
		return err
	}
	defer ac.Close()
	return f(ac)
}

// diskMedia is a --disk value: a vdisk name (NAME, NAME:ro, NAME@SNAP) of
// the node's blockd or an nbd:// URL.
func diskMedia(s string) vm.Media {
	return vm.Media{URL: s, ReadOnly: strings.HasSuffix(s, ":ro") || strings.Contains(s, "@") && !strings.Contains(s, "://")}
}

func newVMCreateCmd() *cobra.Command {
	var disks, cdroms, nics, ports, tags []string
	var mem sizeValue = 512 << 20
	var cpu int
	var kernel, initrd, cmdline string
	var format *string
	cmd := &cobra.Command{
		Use:   "create NODE NAME --disk VDISK [--disk ...]",
		Short: "Create and boot a VM whose disks are vdisks",
		Long: `Create and boot VM NAME on NODE. --disk is a vdisk of the cluster (served by
the node's blockd: NAME read-write, NAME:ro or NAME@SNAP read-only) or an
nbd://HOST:PORT/EXPORT URL; the first disk is vda. A vdisk attached
read-write anywhere else is refused. --nic is default (qemu user
networking, NAT; --port forwards in qemu) or bridge[:NAME[:GUEST-IP]] (a
tap on zos0 or NAME; without a default nic, --port forwards go to
GUEST-IP with nftables DNAT, as containers'). --port alone adds a default
nic.

  zos vm create n1 vm1 --disk vm1-boot --memory 1G --cpu 2 --port 2222:22
  zos vm create n1 vm2 --disk vm2-boot --kernel /boot/vmlinuz --initrd /boot/initrd.img \
      --cmdline 'console=ttyS0 root=/dev/vda' --nic bridge`,
		Args: cobra.ExactArgs(2),
		RunE: func(c *cobra.Command, args []string) error {
			s := vm.Spec{Name: args[1], CPU: cpu, Memory: int(int64(mem) >> 20), Kernel: kernel, Initrd: initrd, Cmdline: cmdline, Tags: tags}
			for _, d := range disks {
				s.Media = append(s.Media, diskMedia(d))
			}
			for _, d := range cdroms {
				s.Media = append(s.Media, vm.Media{URL: d, Type: "cdrom", ReadOnly: true})
			}
			hasDefault, hasIP := false, false
			for _, n := range nics {
				f := strings.Split(n, ":")
				if (f[0] != "default" || len(f) > 1) && (f[0] != "bridge" || len(f) > 3) {
					return fmt.Errorf("--nic %q: want default or bridge[:NAME[:GUEST-IP]]", n)
				}
				nic := vm.NIC{Type: f[0]}
				if len(f) > 1 {
					nic.ID = f[1]
				}
				if len(f) > 2 {
					nic.IP, hasIP = f[2], true
				}
				hasDefault = hasDefault || nic.Type == "default"
				s.NICs = append(s.NICs, nic)
			}
			for _, p := range ports {
				h, g, ok := strings.Cut(p, ":")
				gp, err := strconv.Atoi(g)
				if _, herr := strconv.Atoi(h); !ok || err != nil || herr != nil {
					return fmt.Errorf("--port %q: want HOST:GUEST, e.g. 2222:22", p)
				}
				if s.Port == nil {
					s.Port = map[string]int{}
				}
				s.Port[h] = gp
			}
			if len(s.Port) > 0 && !hasDefault && !hasIP {
				s.NICs = append([]vm.NIC{{Type: "default"}}, s.NICs...)
			}
			return withAgent(c, args[0], func(ac *client.Client) error {
				in, err := ac.KVMCreate(c.Context(), s)
				if err != nil {
					return err
				}
				return output(*format, c.OutOrStdout(), in, func() { printVMInfo(c, in) })
			})
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&disks, "disk", nil, "vdisk (NAME, NAME:ro, NAME@SNAP) or nbd:// URL (repeatable; the first is vda)")
	f.StringArrayVar(&cdroms, "cdrom", nil, "vdisk or nbd:// URL attached as a read-only IDE cdrom (repeatable)")
	f.Var(&mem, "memory", "guest RAM (e.g. 512M, 1G)")
	f.IntVar(&cpu, "cpu", 1, "vCPUs")
	f.StringVar(&kernel, "kernel", "", "kernel to boot directly (a path on the node)")
	f.StringVar(&initrd, "initrd", "", "initrd of --kernel (a path on the node)")
	f.StringVar(&cmdline, "cmdline", "", "kernel command line of --kernel")
	f.StringArrayVar(&nics, "nic", nil, "default (user networking), or bridge[:NAME[:GUEST-IP]] (a tap on zos0 or NAME; repeatable)")
	f.StringArrayVar(&ports, "port", nil, "HOST:GUEST TCP forward (repeatable): on the default nic, else to the first bridge nic's GUEST-IP (nftables)")
	f.StringArrayVar(&tags, "tag", nil, "free-form tag (repeatable)")
	format = addOutputFlag(cmd)
	return cmd
}

func printVMInfo(c *cobra.Command, in vm.Info) {
	w := c.OutOrStdout()
	fmt.Fprintf(w, "name:    %s\nstate:   %s", in.Name, in.State)
	if in.Status != "" && string(in.State) != in.Status {
		fmt.Fprintf(w, " (%s)", in.Status)
	}
	if in.Exit != "" {
		fmt.Fprintf(w, " — %s", in.Exit)
	}
	fmt.Fprintf(w, "\naccel:   %s\npid:     %d\ncpu:     %d\nmemory:  %d MiB\nuptime:  %s\n", in.Accel, in.PID, in.CPU, in.Memory, in.Uptime.Round(time.Second))
	for _, d := range in.Disks {
		ro := "rw"
		if d.ReadOnly {
			ro = "ro"
		}
		fmt.Fprintf(w, "disk:    %s %s %s %s %s\n", d.ID, d.URL, d.Type, d.Bus, ro)
	}
	for _, n := range in.NICs {
		fmt.Fprintf(w, "nic:     %s %s %s %s\n", n.Type, n.Bridge, n.Tap, n.HWAddr)
	}
	if len(in.Tags) > 0 {
		fmt.Fprintf(w, "tags:    %s\n", strings.Join(in.Tags, ", "))
	}
}

func newVMListCmd() *cobra.Command {
	var format *string
	cmd := &cobra.Command{Use: "list NODE", Short: "List the VMs of NODE", Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			return withAgent(c, args[0], func(ac *client.Client) error {
				l, err := ac.KVMList(c.Context())
				if err != nil {
					return err
				}
				return output(*format, c.OutOrStdout(), l, func() {
					var rows [][]string
					for _, in := range l {
						var ds []string
						for _, d := range in.Disks {
							ds = append(ds, d.URL)
						}
						rows = append(rows, []string{in.Name, string(in.State), strconv.Itoa(in.CPU), fmt.Sprintf("%d MiB", in.Memory),
							in.Uptime.Round(time.Second).String(), strings.Join(ds, ",")})
					}
					table(c.OutOrStdout(), []string{"NAME", "STATE", "CPU", "MEMORY", "UPTIME", "DISKS"}, rows)
				})
			})
		}}
	format = addOutputFlag(cmd)
	return cmd
}

func newVMInfoCmd() *cobra.Command {
	var format *string
	cmd := &cobra.Command{Use: "info NODE NAME", Short: "Show a VM: state, cpu, memory, disks, nics, uptime", Args: cobra.ExactArgs(2),
		RunE: func(c *cobra.Command, args []string) error {
			return withAgent(c, args[0], func(ac *client.Client) error {
				in, err := ac.KVMInfo(c.Context(), args[1])
				if err != nil {
					return err
				}
				return output(*format, c.OutOrStdout(), in, func() { printVMInfo(c, in) })
			})
		}}
	format = addOutputFlag(cmd)
	return cmd
}

func newVMShutdownCmd() *cobra.Command {
	var timeout time.Duration
	cmd := &cobra.Command{Use: "shutdown NODE NAME", Short: "Power a VM off (ACPI), killing qemu after --timeout", Args: cobra.ExactArgs(2),
		RunE: func(c *cobra.Command, args []string) error {
			return withAgent(c, args[0], func(ac *client.Client) error {
				killed, err := ac.KVMShutdown(c.Context(), args[1], int(timeout/time.Second))
				if err != nil {
					return err
				}
				if killed {
					fmt.Fprintf(c.OutOrStdout(), "%s: the guest did not power off within %s; qemu was killed\n", args[1], timeout)
				} else {
					fmt.Fprintf(c.OutOrStdout(), "%s: powered off\n", args[1])
				}
				return nil
			})
		}}
	cmd.Flags().DurationVar(&timeout, "timeout", 60*time.Second, "how long the guest gets to power off")
	return cmd
}

func newVMConsoleCmd() *cobra.Command {
	var follow bool
	cmd := &cobra.Command{Use: "console NODE NAME", Short: "Print a VM's serial console log (-f: keep following)", Args: cobra.ExactArgs(2),
		RunE: func(c *cobra.Command, args []string) error {
			ctx, stop := signal.NotifyContext(c.Context(), os.Interrupt)
			defer stop()
			return withAgent(c, args[0], func(ac *client.Client) error {
				err := ac.KVMConsole(ctx, args[1], follow, func(line string) { fmt.Fprintln(c.OutOrStdout(), line) })
				if ctx.Err() != nil {
					return nil
				}
				return err
			})
		}}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing what the guest writes until interrupted or the VM stops")
	return cmd
}

func newVMAttachCmd() *cobra.Command {
	return &cobra.Command{Use: "attach NODE NAME VDISK", Short: "Hot-plug a vdisk (or nbd:// URL) into a running VM as a virtio disk", Args: cobra.ExactArgs(3),
		RunE: func(c *cobra.Command, args []string) error {
			return withAgent(c, args[0], func(ac *client.Client) error {
				id, err := ac.KVMAttachDisk(c.Context(), args[1], diskMedia(args[2]))
				if err != nil {
					return err
				}
				fmt.Fprintf(c.OutOrStdout(), "%s: attached %s as %s\n", args[1], args[2], id)
				return nil
			})
		}}
}

func newVMDetachCmd() *cobra.Command {
	return &cobra.Command{Use: "detach NODE NAME DISK", Short: "Hot-unplug a disk (its id, e.g. disk1, vdisk name or URL) from a running VM", Args: cobra.ExactArgs(3),
		RunE: func(c *cobra.Command, args []string) error {
			return withAgent(c, args[0], func(ac *client.Client) error {
				disk, err := resolveDisk(c, ac, args[1], args[2])
				if err != nil {
					return err
				}
				if err := ac.KVMDetachDisk(c.Context(), args[1], disk); err != nil {
					return err
				}
				fmt.Fprintf(c.OutOrStdout(), "%s: detached %s\n", args[1], args[2])
				return nil
			})
		}}
}

// resolveDisk maps a vdisk name to the disk id the VM has it as (the
// runtime names disks by id or canonical URL).
func resolveDisk(c *cobra.Command, ac *client.Client, name, disk string) (string, error) {
	in, err := ac.KVMInfo(c.Context(), name)
	if err != nil {
		return "", err
	}
	for _, d := range in.Disks {
		if d.ID == disk || d.URL == disk || strings.HasSuffix(d.URL, "/"+disk) {
			return d.ID, nil
		}
	}
	return disk, nil
}

func newVMLimitCmd() *cobra.Command {
	var t vm.IOTune
	cmd := &cobra.Command{Use: "limit NODE NAME DISK", Short: "Throttle a VM's disk (0 everywhere removes the limits)", Args: cobra.ExactArgs(3),
		RunE: func(c *cobra.Command, args []string) error {
			return withAgent(c, args[0], func(ac *client.Client) error {
				disk, err := resolveDisk(c, ac, args[1], args[2])
				if err != nil {
					return err
				}
				return ac.KVMLimitDiskIO(c.Context(), args[1], disk, t)
			})
		}}
	f := cmd.Flags()
	f.Int64Var(&t.TotalBytesSec, "bps", 0, "total bytes/s")
	f.Int64Var(&t.ReadBytesSec, "bps-rd", 0, "read bytes/s")
	f.Int64Var(&t.WriteBytesSec, "bps-wr", 0, "write bytes/s")
	f.Int64Var(&t.TotalIOPSSec, "iops", 0, "total I/O per second")
	f.Int64Var(&t.ReadIOPSSec, "iops-rd", 0, "read I/O per second")
	f.Int64Var(&t.WriteIOPSSec, "iops-wr", 0, "write I/O per second")
	return cmd
}
