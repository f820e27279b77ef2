package raft

import (
	"errors"
	"sync"
	"testing"
	"time"

	hraft "github.com/hashicorp/raft"
)

// stuckPipeline's AppendEntries blocks until the pipeline is closed, as
// netPipeline's does once its in-flight channel is full and undrained.
type stuckPipeline struct {
	once   sync.Once
	closed chan struct{}
}

func (p *stuckPipeline) AppendEntries(*hraft.AppendEntriesRequest, *hraft.AppendEntriesResponse) (hraft.AppendFuture, error) {
	<-p.closed
	return nil, hraft.ErrPipelineShutdown
}
func (p *stuckPipeline) Consumer() <-chan hraft.AppendFuture { return nil }
func (p *stuckPipeline) Close() error                        { p.once.Do(func() { close(p.closed) }); return nil }

func TestWatchedPipelineEndsStuckAppend(t *testing.T) {
	inner := &stuckPipeline{closed: make(chan struct{})}
	p := &watchedPipeline{AppendPipeline: inner, timeout: 50 * time.Millisecond}
	done := make(chan error, 1)
	go func() {
		_, err := p.AppendEntries(&hraft.AppendEntriesRequest{}, &hraft.AppendEntriesResponse{})
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, hraft.ErrPipelineShutdown) {
			t.Fatalf("err = %v, want ErrPipelineShutdown", err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("a stuck AppendEntries was not ended by the watchdog")
	}
	// Closing again (replication's deferred Close) is harmless.
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
}

// The watched transport still is every optional transport interface
// hashicorp/raft looks for on a NetworkTransport.
func TestWatchedTransportInterfaces(t *testing.T) {
	var tr hraft.Transport = &watchedTransport{}
	if _, ok := tr.(hraft.WithClose); !ok {
		t.Error("not WithClose")
	}
	if _, ok := tr.(hraft.WithPreVote); !ok {
		t.Error("not WithPreVote")
	}
}
