// Package agent is the node agent: 0-core's job protocol over the node's
// RESP keyspace (node/resp).
//
// A client pushes command JSON (Command) to the list core:default. The
// Manager pops it, decodes it strictly, acknowledges it by creating
// result:<id>:flag (no TTL while the job runs), runs the handler registered
// for the command's name, and replaces result:<id> with the JobResult,
// which — like the flag and stream:<id> — expires ResultTTL (300 s) after
// the job ends. Clients read the result with BRPOPLPUSH result:<id>
// result:<id> T, so any number of readers see it. With stream set, every
// output line is pushed to stream:<id> as {"message": {message, epoch,
// meta}} with meta = level<<16 | flags (0x2/0x4 mark the end).
//
// Jobs: commands sharing a queue run one after another, others at once;
// max_time kills a job (TIMEOUT), job.kill signals it (KILLED), a failed
// job is re-run up to max_restart times, and recurring_period re-runs it
// until job.unschedule. A duplicate id is dropped and answered with
// DUPILICATE_ID; an unknown command with UNKNOWN_CMD.
//
// Processes (Job.Exec) run in their own process group, with stdout and
// stderr captured through bounded buffers and parsed into 0-core levels
// (1 stdout, 2 stderr, "N::: msg" lines and "N:::" … ":::" blocks; level
// 20 is the JSON result). When a job ends, is killed or times out, its
// whole group is killed and reaped. Jobs do not belong to the client
// connection that submitted them. Run's return kills and reaps every job.
//
// Usage:
//
//	ks := resp.NewKeyspace(resp.KeyspaceConfig{})
//	m, _ := agent.New(agent.Config{Keyspace: ks, Registerer: reg})
//	info.Register(m)   // info.*, disk.*: sibling packages add commands
//	go m.Run(ctx)
//
// Handlers decode their arguments with Job.Decode (strict: unknown
// fields and wrong types answer ERROR with code 400).
package agent
