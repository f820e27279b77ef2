package nbd_test

import (
	"crypto/tls"
	"errors"
	"testing"

	"github.com/zosproject/zos/blockd/nbd"
)

func TestConfigValidate(t *testing.T) {
	ok := nbd.Config{Exports: nbd.NewStaticExports()}
	if err := ok.Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	for name, c := range map[string]nbd.Config{
		"no exports":        {},
		"require without":   {Exports: ok.Exports, RequireTLS: true},
		"tls without certs": {Exports: ok.Exports, TLS: &tls.Config{}},
		"tiny requests":     {Exports: ok.Exports, MaxRequestSize: 100},
		"hole granularity":  {Exports: ok.Exports, HoleGranularity: 3000},
		"negative inflight": {Exports: ok.Exports, MaxInFlightRequests: -1},
	} {
		if err := c.Validate(); !errors.Is(err, nbd.ErrConfig) {
			t.Errorf("%s: Validate = %v, want ErrConfig", name, err)
		}
		if _, err := nbd.New(c); err == nil {
			t.Errorf("%s: New accepted it", name)
		}
	}
}
