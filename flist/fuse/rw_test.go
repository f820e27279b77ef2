package fuse

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/zosproject/zos/flist"
	"github.com/zosproject/zos/flist/internal/memstore"
	"golang.org/x/sys/unix"
)

func TestOverlayRW(t *testing.T) {
	src := richTree(t)
	fx := build(t, src).withCache(t, 256<<20)
	puts := fx.store.Puts.Load()
	chunks := fx.store.Len()
	over := t.TempDir()
	m := fx.mount(t, Config{RW: true, OverlayDir: over})
	mnt := m.Dir()
	if err := os.WriteFile(filepath.Join(mnt, "new-file"), []byte("written"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(mnt, "etc/motd"), []byte("changed"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(mnt, "empty")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(mnt, "newdir"), 0o700); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(mnt, "etc/motd")); string(got) != "changed" {
		t.Fatalf("motd %q", got)
	}
	if _, err := os.Stat(filepath.Join(mnt, "empty")); !os.IsNotExist(err) {
		t.Fatalf("deleted file: %v", err)
	}
	// Writes land in the upper dir...
	if got, _ := os.ReadFile(filepath.Join(m.UpperDir(), "new-file")); string(got) != "written" {
		t.Fatalf("upper new-file %q", got)
	}
	// ...never in the store or the flist.
	if fx.store.Puts.Load() != puts || fx.store.Len() != chunks {
		t.Fatalf("store changed: puts %d->%d", puts, fx.store.Puts.Load())
	}
	if _, err := fx.r.Resolve("new-file"); err == nil {
		t.Fatal("flist changed")
	}
	var b bytes.Buffer
	if err := fx.r.Cat(context.Background(), fx.store, "etc/motd", &b); err != nil || b.String() != "hello from zos\n" {
		t.Fatalf("flist content %q %v", b.String(), err)
	}
	// The lower tree is still read-only and unchanged.
	lower := filepath.Join(over, "lower")
	if got, _ := os.ReadFile(filepath.Join(lower, "etc/motd")); string(got) != "hello from zos\n" {
		t.Fatalf("lower motd %q", got)
	}
	// A container-like use: chroot into the writable tree.
	out, err := exec.Command("chroot", mnt, "/bin/sh", "-c", "echo ok > /tmp/x && cat /tmp/x").CombinedOutput()
	if err != nil || string(out) != "ok\n" {
		t.Fatalf("chroot write: %q %v", out, err)
	}
}

func TestOverlayTempDirRemoved(t *testing.T) {
	src := busyboxRoot(t)
	fx := build(t, src)
	needFUSE(t)
	m, err := Mount(Config{Mountpoint: filepath.Join(t.TempDir(), "m"), Flist: fx.r, Store: fx.store, RW: true})
	if err != nil {
		t.Fatal(err)
	}
	upper := m.UpperDir()
	os.WriteFile(filepath.Join(m.Dir(), "scratch"), []byte("x"), 0o644)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := m.Unmount(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(upper); !os.IsNotExist(err) {
		t.Fatalf("temporary overlay dir left: %v", err)
	}
}

// TestHelperMount is a mount daemon in a separate process, for the stale
// mount test: it mounts and waits to be killed.
func TestHelperMount(t *testing.T) {
	mnt := os.Getenv("ZOS_FUSE_HELPER_MNT")
	if mnt == "" {
		t.Skip("helper")
	}
	store := memstore.New()
	tr := flist.NewTree()
	tr.Put([]string{"hello"}, &flist.Node{Inode: flist.Inode{Mode: flist.TypeReg | 0o644}})
	p := filepath.Join(t.TempDir(), "h.flist")
	if _, err := tr.WriteFile(p); err != nil {
		t.Fatal(err)
	}
	r, err := flist.OpenFile(p)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Mount(Config{Mountpoint: mnt, Flist: r, Store: store, RW: os.Getenv("ZOS_FUSE_HELPER_RW") != "", OverlayDir: os.Getenv("ZOS_FUSE_HELPER_OVERLAY")})
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(os.Getenv("ZOS_FUSE_HELPER_READY"), []byte(strconv.Itoa(os.Getpid())), 0o644)
	select {}
}

func TestStaleMountRecovered(t *testing.T) {
	for _, rw := range []bool{false, true} {
		t.Run("rw="+strconv.FormatBool(rw), func(t *testing.T) {
			needFUSE(t)
			dir := t.TempDir()
			mnt := filepath.Join(dir, "mnt")
			over := filepath.Join(dir, "overlay")
			ready := filepath.Join(dir, "ready")
			cmd := exec.Command(os.Args[0], "-test.run=^TestHelperMount$", "-test.count=1")
			env := []string{"ZOS_FUSE_HELPER_MNT=" + mnt, "ZOS_FUSE_HELPER_READY=" + ready, "ZOS_FUSE_HELPER_OVERLAY=" + over}
			if rw {
				env = append(env, "ZOS_FUSE_HELPER_RW=1")
			}
			cmd.Env = append(os.Environ(), env...)
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(60 * time.Second)
			for {
				if _, err := os.Stat(ready); err == nil {
					break
				}
				if time.Now().After(deadline) {
					cmd.Process.Kill()
					cmd.Wait()
					t.Fatalf("helper did not mount:\n%s", out.String())
				}
				time.Sleep(20 * time.Millisecond)
			}
			// The daemon dies without unmounting.
			cmd.Process.Signal(syscall.SIGKILL)
			cmd.Wait()
			t.Cleanup(func() {
				unix.Unmount(mnt, unix.MNT_DETACH)
				unix.Unmount(filepath.Join(over, "lower"), unix.MNT_DETACH)
			})
			_, err := os.ReadDir(mnt)
			if err == nil || !(isErrno(err, unix.ENOTCONN) || isErrno(err, unix.EIO)) {
				t.Fatalf("dead mount answers %v, expected ENOTCONN", err)
			}
			// Mounting again at the same place detects and detaches it.
			src := busyboxRoot(t)
			fx := build(t, src)
			m := fx.mount(t, Config{Mountpoint: mnt, RW: rw, OverlayDir: over})
			if _, err := os.Stat(filepath.Join(m.Dir(), "bin/busybox")); err != nil {
				t.Fatalf("new mount: %v", err)
			}
			if data, _ := os.ReadFile("/proc/self/mountinfo"); strings.Count(string(data), " "+mnt+" ") != 1 {
				t.Errorf("mount table:\n%s", data)
			}
		})
	}
}

func TestLiveMountBusy(t *testing.T) {
	src := busyboxRoot(t)
	fx := build(t, src)
	m := fx.mount(t, Config{})
	if _, err := Mount(Config{Mountpoint: m.Dir(), Flist: fx.r, Store: fx.store}); err == nil {
		t.Fatal("mounted twice")
	}
}
