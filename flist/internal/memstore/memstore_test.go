package memstore_test

import (
	"testing"

	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/chunkstore/storetest"
	"github.com/zosproject/zos/flist/internal/memstore"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) chunkstore.Store { return memstore.New() })
}
