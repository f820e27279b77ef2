// Package vm runs the VMs of one node: qemu-system-x86_64 processes whose
// disks are vdisks served over NBD (by the node's blockd, or any NBD
// server), controlled over QMP with github.com/digitalocean/go-qemu/qmp.
// It is the runtime under the agent's kvm.* commands; it knows nothing of
// the agent, RESP or blockd's internals (the vdisk lease is behind the
// DiskLeaser interface).
//
// # Usage
//
//	m, _ := vm.Open(vm.Config{Dir: dataDir + "/vms", Leaser: l, Registerer: reg})
//	info, err := m.Create(ctx, vm.Spec{Name: "vm1", Memory: 1024,
//		Media: []vm.Media{{URL: "nbd://127.0.0.1:10809/vm1-boot"}}, NICs: []vm.NIC{{Type: "bridge"}}})
//	r, _ := m.Console("vm1", true)          // follow the serial console
//	m.AttachDisk(ctx, "vm1", vm.Media{URL: "data1"})
//	m.Shutdown(ctx, "vm1", 30*time.Second)  // ACPI power button, SIGKILL after 30 s
//	m.Destroy(ctx, "vm1")                   // stop at once and forget
//	m.Close()                               // let go; the VMs keep running
//
// # Lifecycle
//
// A VM is a small state machine in the manner of Nomad's task runner:
// Create validates the Spec, then runs the pre-start steps — directory, vdisk
// leases (DiskLeaser.Acquire for every read-write disk), taps on bridges —
// starts qemu paused (-S), connects QMP and the serial console, applies I/O
// limits and only then lets the guest run (QMP cont), so no console byte is
// lost. Any failure undoes every step done so far in reverse order: bad
// input never leaves a half-created VM, a lease or a tap behind. Running and
// paused VMs answer Pause, Resume, Reset, Reboot, AttachDisk, DetachDisk,
// LimitDiskIO and Info. When qemu exits — guest power-off, Shutdown, a crash,
// a kill — the post-stop step closes QMP and the console, deletes the taps,
// releases the leases and removes the sockets; the VM stays listed as
// stopped, with its console log and the reason (qemu's SHUTDOWN reason when
// it gave one), until Start boots it again or Destroy removes it and its
// directory.
//
// # Processes: qemu daemonizes
//
// qemu is started with -daemonize (and Setsid): the command returns only
// once qemu has created its devices — in particular connected every NBD
// disk — so a missing vdisk, an unreachable server or a bad option fails
// Create synchronously with qemu's own message (from qemu.stderr). The
// daemon is reparented to init (or the agent, when the agent is PID 1 and
// reaps orphans), so a VM started by this process and one adopted after a
// restart are the same kind of thing: a pid from qemu's -pidfile, checked
// against /proc/PID/cmdline (its QMP socket path) so a recycled pid is never
// adopted, and watched through a pidfd, so it is never signalled by mistake.
// Not forking-and-waiting costs the exit status, which QMP's SHUTDOWN event
// and the stop reason replace. Nomad's qemu driver keeps qemu as a child of
// an executor process instead; zos has no executor, and a child of the agent
// would need re-parenting on every agent restart anyway.
//
// # Restart recovery
//
// Everything a VM needs to be found again is in Config.Dir/NAME: vm.json
// (the Spec and what Create made of it: disks with their node names, taps,
// hot-plugged disks, written crash-safely on every change), qemu.pid,
// qmp.sock and console.sock. Open adopts every VM there: a live qemu is
// reconnected (QMP and console) and keeps running; a dead one is marked
// stopped and its post-stop step runs (leases released, taps deleted). vm.json
// is written before Create acquires anything, so an agent that dies in the
// middle of a Create leaves a stopped VM whose leases and taps the next Open
// gives back (a directory without vm.json is simply removed). A lock file
// keeps a second Manager off the same directory. Console bytes the
// guest prints while no Manager is connected are lost (qemu drops output on
// an unconnected socket chardev); everything else is kept.
//
// # Console
//
// The serial port is a qemu socket chardev that the Manager copies into a
// bounded, rotating log (package console; Config.ConsoleBytes, 1 MiB by
// default, 0-core #71). Console returns readers that start at the oldest kept
// byte and optionally follow.
//
// # Disks
//
// Each Media becomes -blockdev driver=nbd (JSON syntax, so export names need
// no escaping) plus a virtio-blk-pci (or IDE) device with qdev id diskN.
// Hot-plug is blockdev-add + device_add on the i440fx machine's ACPI PCI
// hot-plug; unplug is device_del, waiting for DEVICE_DELETED (the guest must
// let go), then blockdev-del and the lease's release. Limits are
// block_set_io_throttle on the virtio backend; Info reports what qemu applies.
//
// # Acceleration
//
// KVM is used when /dev/kvm really works (see probeKVM: a one-instruction
// guest must run and KVM must offer guests the host's baseline CPU
// features), else TCG; Config.Accel forces either.
//
// # Guarantees
//
// Manager is safe for concurrent use; operations on one VM are serialised,
// operations on different VMs run in parallel. Every error names the VM and
// wraps one of the package's sentinels (ErrInvalid, ErrExists, ErrNotFound,
// ErrNotRunning, ErrStart, ErrLease, ErrNoDisk).
//
// # Metrics
//
// zos_vm_running (gauge), zos_vm_created_total, zos_vm_create_failures_total.
package vm
