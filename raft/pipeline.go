package raft

import (
	"time"

	hraft "github.com/hashicorp/raft"
)

// watchedTransport is the node's NetworkTransport with a watchdog on its
// append pipelines. hashicorp/raft (v1.7.2, as v1.8.0) can hang Shutdown (and so a
// node's Close) forever: when replication to a follower stops,
// pipelineReplicate makes a best-effort send up to the last index even if
// its response decoder has already ended; netPipeline.AppendEntries then
// blocks on its full in-flight channel, which nothing drains, and Shutdown
// waits for that goroutine. The watchdog closes a pipeline whose
// AppendEntries has not returned within the transport's timeout: the call
// returns ErrPipelineShutdown and replication falls back to plain
// AppendEntries, as after any pipeline error.
type watchedTransport struct {
	*hraft.NetworkTransport
	timeout time.Duration
}

// AppendEntriesPipeline returns the transport's pipeline, watched.
func (t *watchedTransport) AppendEntriesPipeline(id hraft.ServerID, target hraft.ServerAddress) (hraft.AppendPipeline, error) {
	p, err := t.NetworkTransport.AppendEntriesPipeline(id, target)
	if err != nil {
		return nil, err
	}
	return &watchedPipeline{AppendPipeline: p, timeout: t.timeout}, nil
}

// watchedPipeline closes its pipeline when an AppendEntries is stuck.
type watchedPipeline struct {
	hraft.AppendPipeline
	timeout time.Duration
}

// AppendEntries sends one request; stuck past the timeout, the pipeline
// is closed, which ends the call with ErrPipelineShutdown. A healthy
// pipeline closed by a late timer only costs a fallback to plain
// AppendEntries.
func (p *watchedPipeline) AppendEntries(args *hraft.AppendEntriesRequest, resp *hraft.AppendEntriesResponse) (hraft.AppendFuture, error) {
	t := time.AfterFunc(p.timeout, func() { _ = p.AppendPipeline.Close() })
	defer t.Stop()
	return p.AppendPipeline.AppendEntries(args, resp)
}
