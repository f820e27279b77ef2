package node

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"
)

// Default ports (DESIGN.md).
const (
	DefaultRaftPort  = 9901
	DefaultAPIPort   = 5000
	DefaultShardPort = 9900
	DefaultNBDPort   = 10809
	DefaultRESPPort  = 6379
)

// Config configures one node.
type Config struct {
	// ID is the node's identity; default: the one stored in Dir, else
	// generated ("n-" + random).
	ID string
	// Dir holds all the node's state.
	Dir string
	// Bind is the IP address every listener binds.
	Bind string
	// Advertise is the address other nodes use to reach this one
	// (default Bind).
	Advertise string

	RaftPort, APIPort, ShardPort, NBDPort, RESPPort int

	// Bootstrap starts a new cluster (when Dir holds no state).
	Bootstrap bool
	// Join is the address of any member (IP, host:port or URL) to join
	// through (when Dir holds no state).
	Join string
	// Token is the admin token set at bootstrap, or the token that
	// authenticates a join. Generated at bootstrap when empty.
	Token string

	// Domain is the failure domain (default: the node ID, i.e. every node
	// its own domain).
	Domain string
	// Capacity is the storage offered, in bytes (default: the size of the
	// file system holding Dir).
	Capacity int64

	// DeadAfter: a member that fails health probes this long is marked
	// down. Default 30s.
	DeadAfter time.Duration
	// ProbeInterval between health probes by the leader. Default 1s.
	ProbeInterval time.Duration
	// ReportInterval between usage reports. Default 30s.
	ReportInterval time.Duration

	// HealInterval between periodic heal passes (a pass also follows every
	// map change). Default 5m. HealRate limits rebuild traffic in bytes/s
	// (0: unlimited).
	HealInterval time.Duration
	HealRate     float64
	// OutAfter: a node down this long is out — its data is rebuilt (or
	// re-encoded) on the others. Until then reads reconstruct and new
	// writes avoid it, but nothing is moved, so a reboot causes no churn.
	// Removed nodes are out at once. Default 10m (Ceph's down-out
	// interval); negative means at once.
	OutAfter time.Duration
	// ScrubInterval between scrubs of the local shards. Default 24h.
	ScrubInterval time.Duration
	// GCGrace: chunks written this recently are never collected. Default 1h.
	GCGrace time.Duration

	// NBD over TLS: a certificate and key in PEM files turn STARTTLS on;
	// NBDTLSClientCA additionally requires client certificates signed by
	// that CA; NBDTLSRequired refuses clients that do not upgrade.
	NBDTLSCert, NBDTLSKey, NBDTLSClientCA string
	NBDTLSRequired                        bool

	// DisableTLS turns TLS off everywhere (--tls=false: a loopback lab).
	// By default every link between nodes is mutual TLS with the cluster
	// CA, and the API, hub and metrics serve HTTPS (internal/pki).
	DisableTLS bool
	// CACert is the cluster CA certificate (a PEM file) a joining node
	// trusts; without it the CA the member at Join presents is trusted on
	// first use (logged with its fingerprint).
	CACert string
	// CertTTL is the validity of node certificates (default 30 days);
	// nodes renew theirs with a third left.
	CertTTL time.Duration
	// CertNames are extra DNS names for this node's certificate.
	CertNames []string
	// RESPTLS serves RESP (6379) over TLS with the node certificate.
	RESPTLS bool

	// LeaseTTL of read-write vdisk attachments (0: blockd's default).
	LeaseTTL time.Duration
	// WritebackCache bounds the write-back cache of one vdisk (dirty
	// data in memory; 0: blockd's default, 1 GiB or 1/8 of memory).
	WritebackCache int64
	// ExtentSize is the largest chunk a run of contiguous written blocks
	// of a vdisk is stored as (0: blockd's default, 1 MiB; negative: every
	// block its own chunk).
	ExtentSize int64

	// Raft timing (0 = package defaults).
	HeartbeatTimeout, ElectionTimeout time.Duration
	SnapshotInterval                  time.Duration
	SnapshotThreshold                 uint64

	// ContainerBridge is the bridge of containers' default nic, made with
	// ContainerCIDR at first use (defaults "zos0", "172.18.0.1/16"; tests
	// give their own so they never touch a real zos0).
	ContainerBridge, ContainerCIDR string

	// JoinTimeout bounds how long a joining node keeps trying. Default 60s.
	JoinTimeout time.Duration

	// QEMU is the qemu-system-x86_64 binary of the node's VMs (kvm.*;
	// found on PATH by default).
	QEMU string

	Logger  *slog.Logger
	Version string
}

func (c *Config) setDefaults() {
	if c.Bind == "" {
		c.Bind = "127.0.0.1"
	}
	if c.Advertise == "" {
		c.Advertise = c.Bind
	}
	def := func(p *int, v int) {
		if *p == 0 {
			*p = v
		}
	}
	def(&c.RaftPort, DefaultRaftPort)
	def(&c.APIPort, DefaultAPIPort)
	def(&c.ShardPort, DefaultShardPort)
	def(&c.NBDPort, DefaultNBDPort)
	def(&c.RESPPort, DefaultRESPPort)
	if c.DeadAfter == 0 {
		c.DeadAfter = 30 * time.Second
	}
	if c.ProbeInterval == 0 {
		c.ProbeInterval = time.Second
	}
	if c.ReportInterval == 0 {
		c.ReportInterval = 30 * time.Second
	}
	if c.HealInterval == 0 {
		c.HealInterval = 5 * time.Minute
	}
	if c.OutAfter == 0 {
		c.OutAfter = 10 * time.Minute
	}
	if c.ScrubInterval == 0 {
		c.ScrubInterval = 24 * time.Hour
	}
	if c.GCGrace == 0 {
		c.GCGrace = time.Hour
	}
	if c.JoinTimeout == 0 {
		c.JoinTimeout = 60 * time.Second
	}
	if c.Version == "" {
		c.Version = "dev"
	}
}

// Validate checks the configuration.
func (c *Config) Validate() error {
	if c.Dir == "" {
		return errors.New("node: --dir is required")
	}
	if ip := net.ParseIP(c.Bind); ip == nil {
		return fmt.Errorf("node: --bind %q is not an IP address", c.Bind)
	}
	if ip := net.ParseIP(c.Advertise); ip == nil {
		return fmt.Errorf("node: --advertise %q is not an IP address", c.Advertise)
	}
	for _, p := range []int{c.RaftPort, c.APIPort, c.ShardPort, c.NBDPort, c.RESPPort} {
		if p <= 0 || p > 65535 {
			return fmt.Errorf("node: port %d out of range", p)
		}
	}
	if c.Bootstrap && c.Join != "" {
		return errors.New("node: --bootstrap and --join exclude each other")
	}
	if (c.NBDTLSCert == "") != (c.NBDTLSKey == "") {
		return errors.New("node: --nbd-tls-cert and --nbd-tls-key go together")
	}
	if (c.NBDTLSRequired || c.NBDTLSClientCA != "") && c.NBDTLSCert == "" {
		return errors.New("node: --nbd-tls-required and --nbd-tls-client-ca need --nbd-tls-cert and --nbd-tls-key")
	}
	if c.DisableTLS && (c.RESPTLS || c.CACert != "") {
		return errors.New("node: --resp-tls and --cacert need TLS (drop --tls=false)")
	}
	if c.DeadAfter < 2*c.ProbeInterval {
		return errors.New("node: DeadAfter must be at least two probe intervals")
	}
	if c.ContainerCIDR != "" {
		if ip, ipn, err := net.ParseCIDR(c.ContainerCIDR); err != nil || ip.To4() == nil || ip.Equal(ipn.IP) {
			return fmt.Errorf("node: --container-cidr %q: want the bridge's IPv4 address with a prefix, e.g. 172.18.0.1/16", c.ContainerCIDR)
		}
	}
	if len(c.ContainerBridge) > 15 {
		return fmt.Errorf("node: --container-bridge %q: at most 15 characters", c.ContainerBridge)
	}
	return nil
}

func (c *Config) hostPort(port int) string { return net.JoinHostPort(c.Bind, strconv.Itoa(port)) }
func (c *Config) advertisePort(port int) string {
	return net.JoinHostPort(c.Advertise, strconv.Itoa(port))
}
