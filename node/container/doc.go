// Package container is the node's container runtime under corex.*: the agent
// owns a container's root, network and lifecycle, and runc runs its process
// from an OCI bundle (containerd's split; the runc binary, not its Go code).
//
// A Manager (one per node, Config.Dir on the node's disk) makes a container
// from a Spec in this order, writing the container's record
// (Dir/containers/ID/state.json, atomically) before each step so that every
// step can be undone, on error or after a crash:
//
//  1. root: overlayfs with Spec.Root (the flist's shared read-only FUSE
//     mount) as the lower layer and upper/work in the container's directory;
//     /proc, /sys, /dev, /tmp, /etc/hostname, /etc/hosts and
//     /etc/resolv.conf are created in the writable layer when the image lacks
//     them;
//  2. network (package network): a netns bind-mounted in the container's
//     directory, a veth pair into the bridge (Config.Bridge, "zos0", created
//     with an address and a masquerade rule when missing — behind the
//     network.Bridges interface so the agent's bridge.create can provide
//     bridges), an address from host-local IPAM, a default route via the
//     bridge, and port forwards as DNAT rules in a zos-owned nftables table
//     (prerouting for traffic from outside and from other containers, output
//     for the host itself, 127.0.0.1 included);
//  3. process: config.json from runtime-spec types, built as containerd's
//     pkg/oci does — a default spec (containerd's mounts, masked and
//     read-only paths, its default capability set, NoNewPrivileges) plus
//     small options: process (Spec.Command, or the image's
//     entrypoint+cmd/env/workdir/user), hostname, the net namespace path,
//     memory and CPU limits under Config.CgroupParent, bind mounts, and for
//     privileged containers every capability the host has, no masks and all
//     devices. Seccomp is not set (yet).
//  4. `runc run --detach` (create and start in one runc process; stdin
//     /dev/null, stdout+stderr appended to the container's log file, which
//     the manager bounds by rotating it to log.1). runc runs with --root in Config.Dir, so a
//     manager sees only its own containers.
//
// Any error undoes what was made (teardown tolerates every part being
// absent), and bad input is refused before anything is made (ErrBadSpec,
// ErrNameTaken, ErrPortForwarded). Terminate sends SIGTERM, SIGKILL after
// Config.StopTimeout, then `runc delete` and the same teardown: cgroups,
// forwards, veth, netns, address, overlay, directory.
//
// A container whose process exits stays listed (status "stopped", its log
// readable) until terminated. Open after an agent restart re-attaches every
// container whose process still runs (re-installing its forwards) and tears
// down every other one, and removes forwards nobody owns: a node restart
// leaves no stray mounts, links or rules.
//
// Exec runs a command inside a running container with `runc exec` and the
// container's process settings, output captured and bounded; it is what
// corex.dispatch and `zos container exec` build on.
//
// Concurrency: a Manager is safe for concurrent use; operations on different
// containers run in parallel (the manager's lock is held only for its maps
// and for port-forward changes).
package container
