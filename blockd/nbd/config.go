package nbd

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Defaults for Config. They follow nbdkit and qemu-nbd where those have an
// opinion.
const (
	// DefaultMaxRequestSize is the largest READ or WRITE accepted, as in
	// nbdkit and qemu (32 MiB); it is advertised as the maximum block size.
	DefaultMaxRequestSize = 32 << 20
	// DefaultMaxInFlightRequests bounds the requests of one connection
	// being served at once (each by a worker goroutine of the connection,
	// started on demand). qemu keeps up to 16 in flight, fio its iodepth;
	// beyond the bound the server stops reading the socket.
	DefaultMaxInFlightRequests = 128
	// DefaultMaxInFlightBytes bounds the payload and read buffers held by
	// one connection's requests in flight.
	DefaultMaxInFlightBytes = 64 << 20
	// DefaultHandshakeTimeout bounds option haggling, TLS included.
	DefaultHandshakeTimeout = 30 * time.Second
	// DefaultShutdownTimeout bounds the graceful stop that cancelling
	// Serve's context starts.
	DefaultShutdownTimeout = 30 * time.Second
	// DefaultHoleGranularity: a READ answered with structured replies sends
	// every aligned all-zero run of at least this many bytes as an
	// OFFSET_HOLE chunk instead of data.
	DefaultHoleGranularity = 4096
	// DefaultInlineThreshold: requests of a command whose recent Export
	// latency is below it are served by the connection's reading goroutine
	// itself, skipping the hand-off to a worker.
	DefaultInlineThreshold = 20 * time.Microsecond
	// DefaultPreferredBlockSize is advertised when ExportInfo.BlockSize is 0.
	DefaultPreferredBlockSize = 4096
)

// Config configures a Server. The zero value of every field but Exports
// means its default; see the Default constants.
type Config struct {
	// Exports resolves export names. Required.
	Exports Exports
	// TLS, if set, lets clients upgrade with NBD_OPT_STARTTLS. It needs at
	// least one certificate (or GetCertificate). TLS 1.2 is the minimum
	// unless the config says otherwise.
	TLS *tls.Config
	// RequireTLS refuses every option but STARTTLS and ABORT before TLS is
	// up (NBD_REP_ERR_TLS_REQD), the spec's FORCEDTLS mode. Needs TLS.
	RequireTLS bool
	// Logger receives connection and error logs; nil means slog.Default().
	// Every record carries component=nbd.
	Logger *slog.Logger
	// Registerer receives the server's Prometheus metrics; nil means none
	// are registered (they are still kept).
	Registerer prometheus.Registerer

	// MaxRequestSize bounds READ and WRITE lengths (EINVAL beyond it).
	MaxRequestSize int
	// MaxInFlightRequests bounds the requests served at once per
	// connection (and so its worker goroutines).
	MaxInFlightRequests int
	// MaxInFlightBytes bounds the buffer bytes held per connection; it is
	// raised to MaxRequestSize if smaller.
	MaxInFlightBytes int64
	// MaxSkip is the largest WRITE payload the server reads and discards
	// to answer an invalid WRITE with an error; a larger one closes the
	// connection. Default 2×MaxRequestSize.
	MaxSkip int64
	// HandshakeTimeout bounds the handshake phase.
	HandshakeTimeout time.Duration
	// ShutdownTimeout bounds the graceful stop started by cancelling the
	// context given to Serve.
	ShutdownTimeout time.Duration
	// HoleGranularity is the smallest zero run sent as a hole in
	// structured READ replies; negative disables hole detection.
	HoleGranularity int
	// InlineThreshold: a request of at most 64 KiB whose command's recent
	// Export latency (a moving average per connection) is below it is
	// served by the goroutine reading the connection, without a hand-off
	// to a worker. That saves a goroutine wake-up per request on fast
	// exports (memory, write-back cache hits); slow commands stay on the
	// workers, concurrent. Negative disables.
	InlineThreshold time.Duration
}

// withDefaults returns c with zero fields set to their defaults.
func (c Config) withDefaults() Config {
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.MaxRequestSize == 0 {
		c.MaxRequestSize = DefaultMaxRequestSize
	}
	if c.MaxInFlightRequests == 0 {
		c.MaxInFlightRequests = DefaultMaxInFlightRequests
	}
	if c.MaxInFlightBytes == 0 {
		c.MaxInFlightBytes = DefaultMaxInFlightBytes
	}
	if c.MaxInFlightBytes < int64(c.MaxRequestSize) {
		c.MaxInFlightBytes = int64(c.MaxRequestSize)
	}
	if c.MaxSkip == 0 {
		c.MaxSkip = 2 * int64(c.MaxRequestSize)
	}
	if c.HandshakeTimeout == 0 {
		c.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = DefaultShutdownTimeout
	}
	if c.HoleGranularity == 0 {
		c.HoleGranularity = DefaultHoleGranularity
	}
	if c.InlineThreshold == 0 {
		c.InlineThreshold = DefaultInlineThreshold
	}
	return c
}

// ErrConfig is wrapped by every Validate error.
var ErrConfig = errors.New("nbd: invalid config")

// Validate reports whether c (after defaults) is usable.
func (c Config) Validate() error {
	c = c.withDefaults()
	switch {
	case c.Exports == nil:
		return fmt.Errorf("%w: Exports is required", ErrConfig)
	case c.RequireTLS && c.TLS == nil:
		return fmt.Errorf("%w: RequireTLS needs a TLS config", ErrConfig)
	case c.TLS != nil && len(c.TLS.Certificates) == 0 && c.TLS.GetCertificate == nil && c.TLS.GetConfigForClient == nil:
		return fmt.Errorf("%w: TLS config has no certificate", ErrConfig)
	case c.MaxRequestSize < 512 || c.MaxRequestSize > 1<<30:
		return fmt.Errorf("%w: MaxRequestSize %d outside [512, 1GiB]", ErrConfig, c.MaxRequestSize)
	case c.MaxInFlightRequests < 1:
		return fmt.Errorf("%w: MaxInFlightRequests %d < 1", ErrConfig, c.MaxInFlightRequests)
	case c.MaxSkip < 0:
		return fmt.Errorf("%w: MaxSkip %d < 0", ErrConfig, c.MaxSkip)
	case c.HandshakeTimeout < 0 || c.ShutdownTimeout < 0:
		return fmt.Errorf("%w: negative timeout", ErrConfig)
	case c.HoleGranularity > 0 && (c.HoleGranularity < 512 || c.HoleGranularity > 1<<20 || c.HoleGranularity&(c.HoleGranularity-1) != 0):
		return fmt.Errorf("%w: HoleGranularity %d is not a power of two in [512, 1MiB]", ErrConfig, c.HoleGranularity)
	}
	return nil
}
