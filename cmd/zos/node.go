package main

import (
	"github.com/spf13/cobra"

	"github.com/zosproject/zos/node"
)

func newNodeCmd() *cobra.Command {
	var cfg node.Config
	cmd := &cobra.Command{
		Use:   "node",
		Short: "Run a zos node (control plane member, API, shard server, NBD, RESP)",
		Long: `Run one zos node. Every listener binds to --bind with the default ports
(Raft 9901, HTTP API 5000, shard server 9900, NBD 10809, RESP 6379).

  zos node --bind 127.0.0.1 --dir /var/lib/zos/n1 --bootstrap --token T
  zos node --bind 127.0.0.2 --dir /var/lib/zos/n2 --join 127.0.0.1 --token T

A node restarted on its --dir rejoins with its state.`,
		Args: cobra.NoArgs,
	}
	f := cmd.Flags()
	f.StringVar(&cfg.ID, "id", "", "node id (default: stored in --dir, else generated)")
	f.StringVar(&cfg.Dir, "dir", "", "data directory (required)")
	f.StringVar(&cfg.Bind, "bind", "127.0.0.1", "IP address every listener binds")
	f.StringVar(&cfg.Advertise, "advertise", "", "address other nodes use to reach this one (default --bind)")
	f.BoolVar(&cfg.Bootstrap, "bootstrap", false, "start a new cluster with this node")
	f.StringVar(&cfg.Join, "join", "", "join the cluster through this member (IP, host:port or URL)")
	f.StringVar(&cfg.Token, "token", "", "admin token: set at --bootstrap (generated if empty), authenticates --join")
	f.StringVar(&cfg.Domain, "domain", "", "failure domain (default: the node id)")
	f.Int64Var(&cfg.Capacity, "capacity", 0, "storage offered in bytes (default: size of the --dir file system)")
	f.IntVar(&cfg.RaftPort, "raft-port", node.DefaultRaftPort, "Raft port")
	f.IntVar(&cfg.APIPort, "api-port", node.DefaultAPIPort, "HTTP API port")
	f.IntVar(&cfg.ShardPort, "shard-port", node.DefaultShardPort, "shard server port")
	f.IntVar(&cfg.NBDPort, "nbd-port", node.DefaultNBDPort, "NBD port")
	f.IntVar(&cfg.RESPPort, "resp-port", node.DefaultRESPPort, "RESP (0-core protocol) port")
	f.StringVar(&cfg.NBDTLSCert, "nbd-tls-cert", "", "PEM certificate: serve NBD with STARTTLS (nbds://)")
	f.StringVar(&cfg.NBDTLSKey, "nbd-tls-key", "", "PEM private key of --nbd-tls-cert")
	f.StringVar(&cfg.NBDTLSClientCA, "nbd-tls-client-ca", "", "PEM CA: require NBD client certificates it signed")
	f.BoolVar(&cfg.NBDTLSRequired, "nbd-tls-required", false, "refuse NBD clients that do not use TLS")
	tlsOn := f.Bool("tls", true, "mutual TLS between nodes and HTTPS for the API with the cluster CA (--tls=false: plaintext, for a loopback lab)")
	f.StringVar(&cfg.CACert, "cacert", "", "cluster CA certificate (PEM) to trust when joining (default: trust the one --join presents, logged)")
	f.DurationVar(&cfg.CertTTL, "cert-ttl", 0, "validity of node certificates; renewed with a third left (default 720h)")
	f.StringSliceVar(&cfg.CertNames, "cert-name", nil, "extra DNS name for this node's certificate (repeatable)")
	f.BoolVar(&cfg.RESPTLS, "resp-tls", false, "serve RESP over TLS with the node certificate (redis-cli --tls --cacert ca.pem)")
	f.DurationVar(&cfg.DeadAfter, "dead-after", 0, "mark a silent member down after this long (default 30s)")
	f.DurationVar(&cfg.HealInterval, "heal-interval", 0, "period of heal passes; one also follows every cluster-map change (default 5m)")
	f.Float64Var(&cfg.HealRate, "heal-rate", 0, "limit rebuild traffic to this many bytes/s (default unlimited)")
	f.DurationVar(&cfg.OutAfter, "out-after", 0, "a node down this long is out: its data is rebuilt on the others (default 10m; negative: at once)")
	f.DurationVar(&cfg.ScrubInterval, "scrub-interval", 0, "period of background scrubs of the local shards (default 24h)")
	f.DurationVar(&cfg.GCGrace, "gc-grace", 0, "chunks written this recently are never garbage collected (default 1h)")
	f.DurationVar(&cfg.LeaseTTL, "lease-ttl", 0, "lifetime of a read-write vdisk lease without renewal (default 15s)")
	f.Var((*sizeValue)(&cfg.WritebackCache), "writeback-cache", "write-back cache of one vdisk, e.g. 256M (default 1G, at most 1/8 of memory)")
	f.Var((*extentValue)(&cfg.ExtentSize), "extent-size", "store runs of contiguous written vdisk blocks as chunks of up to this size, or \"off\" for a chunk per block (default 1M)")
	f.DurationVar(&cfg.HeartbeatTimeout, "raft-heartbeat", 0, "Raft heartbeat timeout (default 1s)")
	f.DurationVar(&cfg.ElectionTimeout, "raft-election", 0, "Raft election timeout (default 1s)")
	f.DurationVar(&cfg.SnapshotInterval, "raft-snapshot-interval", 0, "how often to check whether a Raft snapshot is due (default 60s)")
	f.Uint64Var(&cfg.SnapshotThreshold, "raft-snapshot-threshold", 0, "log entries between Raft snapshots (default 8192)")
	f.StringVar(&cfg.ContainerBridge, "container-bridge", "", "bridge of containers' default nic, made at first use (default zos0)")
	f.StringVar(&cfg.ContainerCIDR, "container-cidr", "", "address of --container-bridge when zos makes it (default 172.18.0.1/16)")
	f.StringVar(&cfg.QEMU, "qemu", "", "qemu-system-x86_64 binary of the node's VMs (default: found on PATH)")
	cmd.AddCommand(newNodeInfoCmd())
	level, format := addLogFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		log, err := newLogger(*level, *format)
		if err != nil {
			return err
		}
		cfg.Logger = log
		cfg.Version = version
		cfg.DisableTLS = !*tlsOn
		return node.Run(cmd.Context(), cfg)
	}
	return cmd
}
