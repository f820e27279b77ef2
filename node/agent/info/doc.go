// Package info adds the node agent's read-only host commands, answered
// from /proc and /sys: info.cpu, info.mem, info.disk, info.nic, info.os,
// info.port, info.version, disk.list (block devices, lsblk-like) and
// disk.mounts (/proc/self/mountinfo).
//
//	info.Register(manager)
//
// Every command takes no arguments (an empty object or null); anything
// else is a bad-arguments error.
package info
