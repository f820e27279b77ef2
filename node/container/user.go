package container

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// withUser resolves an image's "user[:group]" (names through the image's
// /etc/passwd and /etc/group, or numbers).
func withUser(root, user string) specOpt {
	return func(s *specs.Spec) error {
		u, g, _ := strings.Cut(user, ":")
		uid, gid, err := lookupID(filepath.Join(root, "etc/passwd"), u, true)
		if err != nil {
			return err
		}
		if g != "" {
			gid, _, err = lookupID(filepath.Join(root, "etc/group"), g, false)
			if err != nil {
				return err
			}
		}
		s.Process.User = specs.User{UID: uid, GID: gid}
		return nil
	}
}

func lookupID(file, name string, passwd bool) (uint32, uint32, error) {
	if n, err := strconv.ParseUint(name, 10, 32); err == nil {
		return uint32(n), uint32(n), nil
	}
	f, err := os.Open(file)
	if err != nil {
		return 0, 0, fmt.Errorf("%w: user %q: %v", ErrBadSpec, name, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		p := strings.Split(sc.Text(), ":")
		if len(p) < 4 || p[0] != name {
			continue
		}
		id, err1 := strconv.ParseUint(p[2], 10, 32)
		gid := id
		var err2 error
		if passwd {
			gid, err2 = strconv.ParseUint(p[3], 10, 32)
		}
		if err1 != nil || err2 != nil {
			break
		}
		return uint32(id), uint32(gid), nil
	}
	return 0, 0, fmt.Errorf("%w: user %q not in the image's %s", ErrBadSpec, name, filepath.Base(file))
}
