package vm

import (
	"encoding/binary"
	"fmt"
	"os"
	"runtime"
	"time"
	"unsafe"

	"golang.org/x/sys/cpu"
	"golang.org/x/sys/unix"
)

// KVM ioctl numbers (linux/kvm.h).
const (
	kvmGetAPIVersion      = 0xAE00
	kvmCreateVM           = 0xAE01
	kvmGetVCPUMmapSize    = 0xAE04
	kvmCreateVCPU         = 0xAE41
	kvmSetUserMemoryRegio = 0x4020AE46
	kvmRun                = 0xAE80
	kvmGetSregs           = 0x8138AE83
	kvmSetSregs           = 0x4138AE84
	kvmSetRegs            = 0x4090AE82
	kvmGetSupportedCPUID  = 0xC008AE05
	kvmExitHLT            = 5
)

// probeKVM reports whether /dev/kvm really runs guest code: it creates a
// VM with one vCPU in real mode whose only instruction is HLT and checks
// that KVM_RUN comes back with KVM_EXIT_HLT within timeout, and that KVM
// offers guests the host's own baseline CPUID features. Opening the device
// is not enough: on the development machines (a nested hypervisor) the HLT
// guest runs, but KVM_GET_SUPPORTED_CPUID lacks SSE3 although the host has
// it, and a Linux guest hangs right after the kernel is decompressed. A
// probe that times out leaves one OS thread behind in KVM_RUN; it is done
// once per Manager.
func probeKVM(timeout time.Duration) error {
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	res := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: a stuck thread is not reused
		res <- runHLT(f)
	}()
	select {
	case err := <-res:
		f.Close()
		return err
	case <-time.After(timeout):
		return fmt.Errorf("KVM_RUN of a one-instruction guest did not return within %v", timeout)
	}
}

func ioctl(fd uintptr, req, arg uintptr) (uintptr, error) {
	r, _, e := unix.Syscall(unix.SYS_IOCTL, fd, req, arg)
	if e != 0 {
		return r, e
	}
	return r, nil
}

func runHLT(kvm *os.File) error {
	v, err := ioctl(kvm.Fd(), kvmGetAPIVersion, 0)
	if err != nil || v != 12 {
		return fmt.Errorf("KVM_GET_API_VERSION = %d, %v (want 12)", v, err)
	}
	vmfd, err := ioctl(kvm.Fd(), kvmCreateVM, 0)
	if err != nil {
		return fmt.Errorf("KVM_CREATE_VM: %w", err)
	}
	defer unix.Close(int(vmfd))
	mem, err := unix.Mmap(-1, 0, 0x2000, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_ANONYMOUS)
	if err != nil {
		return err
	}
	defer unix.Munmap(mem)
	mem[0x1000] = 0xf4  // hlt
	var region [32]byte // kvm_userspace_memory_region{slot, flags u32; gpa, size, uaddr u64}
	binary.LittleEndian.PutUint64(region[8:], 0)
	binary.LittleEndian.PutUint64(region[16:], uint64(len(mem)))
	binary.LittleEndian.PutUint64(region[24:], uint64(uintptr(unsafe.Pointer(&mem[0]))))
	if _, err := ioctl(vmfd, kvmSetUserMemoryRegio, uintptr(unsafe.Pointer(&region[0]))); err != nil {
		return fmt.Errorf("KVM_SET_USER_MEMORY_REGION: %w", err)
	}
	cpufd, err := ioctl(vmfd, kvmCreateVCPU, 0)
	if err != nil {
		return fmt.Errorf("KVM_CREATE_VCPU: %w", err)
	}
	defer unix.Close(int(cpufd))
	size, err := ioctl(kvm.Fd(), kvmGetVCPUMmapSize, 0)
	if err != nil {
		return fmt.Errorf("KVM_GET_VCPU_MMAP_SIZE: %w", err)
	}
	run, err := unix.Mmap(int(cpufd), 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return err
	}
	defer unix.Munmap(run)
	var sregs [312]byte
	if _, err := ioctl(cpufd, kvmGetSregs, uintptr(unsafe.Pointer(&sregs[0]))); err != nil {
		return fmt.Errorf("KVM_GET_SREGS: %w", err)
	}
	binary.LittleEndian.PutUint64(sregs[0:], 0)  // cs.base
	binary.LittleEndian.PutUint16(sregs[12:], 0) // cs.selector
	if _, err := ioctl(cpufd, kvmSetSregs, uintptr(unsafe.Pointer(&sregs[0]))); err != nil {
		return fmt.Errorf("KVM_SET_SREGS: %w", err)
	}
	var regs [144]byte
	binary.LittleEndian.PutUint64(regs[128:], 0x1000) // rip
	binary.LittleEndian.PutUint64(regs[136:], 2)      // rflags
	if _, err := ioctl(cpufd, kvmSetRegs, uintptr(unsafe.Pointer(&regs[0]))); err != nil {
		return fmt.Errorf("KVM_SET_REGS: %w", err)
	}
	for {
		_, err := ioctl(cpufd, kvmRun, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("KVM_RUN: %w", err)
		}
		break
	}
	if reason := binary.LittleEndian.Uint32(run[8:]); reason != kvmExitHLT {
		return fmt.Errorf("KVM_RUN exited with reason %d, want HLT (%d)", reason, kvmExitHLT)
	}
	return checkCPUID(kvm)
}

// checkCPUID: KVM must offer guests the baseline features the host CPU has
// (leaf 1: SSE3, SSSE3, SSE4.1, SSE4.2, POPCNT), else it is a broken nested
// setup whose guests hang.
func checkCPUID(kvm *os.File) error {
	const max = 256
	buf := make([]byte, 8+40*max) // kvm_cpuid2 + entries
	binary.LittleEndian.PutUint32(buf, max)
	if _, err := ioctl(kvm.Fd(), kvmGetSupportedCPUID, uintptr(unsafe.Pointer(&buf[0]))); err != nil {
		return fmt.Errorf("KVM_GET_SUPPORTED_CPUID: %w", err)
	}
	n := int(binary.LittleEndian.Uint32(buf))
	var ecx uint32
	found := false
	for i := range min(n, max) {
		e := buf[8+40*i:]
		if binary.LittleEndian.Uint32(e) == 1 { // function 1
			ecx, found = binary.LittleEndian.Uint32(e[20:]), true
			break
		}
	}
	if !found {
		return fmt.Errorf("KVM offers no CPUID leaf 1")
	}
	for _, f := range []struct {
		name string
		host bool
		bit  uint
	}{
		{"sse3", cpu.X86.HasSSE3, 0}, {"ssse3", cpu.X86.HasSSSE3, 9}, {"sse4.1", cpu.X86.HasSSE41, 19},
		{"sse4.2", cpu.X86.HasSSE42, 20}, {"popcnt", cpu.X86.HasPOPCNT, 23},
	} {
		if f.host && ecx&(1<<f.bit) == 0 {
			return fmt.Errorf("KVM does not offer guests %s although the host CPU has it (broken nested virtualization?)", f.name)
		}
	}
	return nil
}
