// Package corex adds the node agent's container commands (0-core's
// corex.*) over node/container:
//
//	corex.create {root, name, hostname, env, mount, nics, port, tags,
//	              privileged, cgroups: {memory, cpu}, command, dir}  → container id
//	corex.list / corex.find {tags}                                   → {"ID": container, …}
//	corex.get {container}                                            → container
//	corex.terminate {container}
//	corex.dispatch {container, command: {command: core.system|core.bash, arguments}}
//	corex.portforward-add {container, host_port, container_port}
//	corex.portforward-remove {container, host_port}
//	corex.logs {container, follow}                                   (output in the job's streams)
//
// container is the id (a number) or the name. root is an flist: REPO/NAME
// on this cluster's hub or an http(s)://…/REPO/NAME.flist URL. Every flist
// is mounted once per node, read-only (FUSE, allow_other, through the
// node's shared chunk cache), under Dir/flists/KEY, however many
// containers use it: the mount is reference-counted and goes with its last
// container. Each container gets its own writable overlay on top
// (node/container). A flist built from an OCI image brings its config
// (entrypoint, cmd, env, working dir, user) as the container's image.
//
// The default nic plugs into Config.Bridge, made with bridge.create's code
// (static address Config.BridgeCIDR, NAT) the first time a container needs
// it; a nic {"type":"bridge","id":NAME,"config":{"cidr":C}} makes bridge
// NAME with C when it is missing.
//
// Bad input (unknown or corrupt flist, bad spec, name taken, port already
// forwarded, bad cidr, bad memory limit) answers ERROR with code 400 and
// leaves nothing behind; node failures answer 500.
//
// Restarts: the flist mounts are served by the node process, so a
// container cannot outlive it with a working root. Close leaves the
// containers running (a clean stop of the agent is not a reason to kill
// workloads), but when the node starts again every container whose root
// was an flist mount of the previous process is terminated and its
// resources removed (mounts, veth, netns, rules, cgroups), and stale
// mounts under Dir/flists are cleaned: a restart leaves nothing stray.
package corex
