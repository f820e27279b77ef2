package shard

import (
	"errors"
	"testing"

	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/chunkstore/disk"
)

func TestConfigValidate(t *testing.T) {
	var store chunkstore.ShardStore = (*disk.Store)(nil)
	for name, c := range map[string]Config{
		"no secret":    {Store: store},
		"short secret": {Store: store, Secret: []byte("short")},
		"no store":     {Secret: []byte("0123456789abcdef")},
	} {
		if err := c.Validate(); !errors.Is(err, ErrConfig) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if err := (Config{Store: store, Secret: []byte("0123456789abcdef")}).Validate(); err != nil {
		t.Fatal(err)
	}
}
