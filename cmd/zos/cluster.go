package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/zosproject/zos/orchestrator/api"
	"github.com/zosproject/zos/orchestrator/client"
	"github.com/zosproject/zos/raft/fsm"
)

func newClusterCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "cluster", Short: "Cluster status and membership (uses ZOS_ADDR, ZOS_TOKEN)"}

	status := &cobra.Command{Use: "status", Short: "Show the cluster: leader, term, commit index, epoch, nodes", Args: cobra.NoArgs}
	sOut := addOutputFlag(status)
	status.RunE = func(cmd *cobra.Command, args []string) error {
		cs, err := client.FromEnv().ClusterStatus(cmd.Context())
		if err != nil {
			return err
		}
		return output(*sOut, cmd.OutOrStdout(), cs, func() {
			w := cmd.OutOrStdout()
			up := 0
			for _, n := range cs.Nodes {
				if n.State == fsm.NodeUp {
					up++
				}
			}
			fmt.Fprintf(w, "cluster:       %s\n", cs.ClusterID)
			fmt.Fprintf(w, "leader:        %s (%s)\n", cs.LeaderID, cs.LeaderAddr)
			fmt.Fprintf(w, "term:          %d\n", cs.Term)
			fmt.Fprintf(w, "commit index:  %d (applied %d on %s)\n", cs.CommitIndex, cs.AppliedIndex, cs.AnsweredBy)
			fmt.Fprintf(w, "map epoch:     %d\n", cs.Epoch)
			fmt.Fprintf(w, "nodes:         %d up of %d\n\n", up, len(cs.Nodes))
			printNodes(cmd, cs.Nodes)
		})
	}

	nodes := &cobra.Command{Use: "nodes", Short: "List the nodes of the cluster map", Args: cobra.NoArgs}
	nOut := addOutputFlag(nodes)
	nodes.RunE = func(cmd *cobra.Command, args []string) error {
		ns, err := client.FromEnv().Nodes(cmd.Context())
		if err != nil {
			return err
		}
		return output(*nOut, cmd.OutOrStdout(), ns, func() { printNodes(cmd, ns) })
	}

	remove := &cobra.Command{Use: "remove NODE", Short: "Remove a node (dead or alive) from the cluster for good; its data is rebuilt elsewhere", Args: cobra.ExactArgs(1)}
	remove.RunE = func(cmd *cobra.Command, args []string) error {
		if err := client.FromEnv().RemoveNode(cmd.Context(), args[0]); err != nil {
			return err
		}
		fmt.Fprintf(cmd.OutOrStdout(), "removed %s\n", args[0])
		return nil
	}
	leave := &cobra.Command{Use: "leave", Short: "The node at ZOS_ADDR leaves the cluster for good: its data is rebuilt elsewhere and it stops (a leader hands over first)", Args: cobra.NoArgs}
	leave.RunE = func(cmd *cobra.Command, args []string) error {
		c := client.FromEnv()
		st, err := c.ClusterStatus(cmd.Context())
		if err != nil {
			return err
		}
		if st.AnsweredBy == "" {
			return fmt.Errorf("the node at %s did not say who it is", c.Addr)
		}
		if err := c.RemoveNode(cmd.Context(), st.AnsweredBy); err != nil {
			return err
		}
		fmt.Fprintf(cmd.OutOrStdout(), "%s left the cluster\n", st.AnsweredBy)
		return nil
	}
	voter := func(use, verb string, call func(*client.Client, context.Context, string) error) *cobra.Command {
		c := &cobra.Command{Use: use + " NODE", Short: verb + " a node as a Raft voter", Args: cobra.ExactArgs(1)}
		c.RunE = func(cmd *cobra.Command, args []string) error {
			if err := call(client.FromEnv(), cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%sd %s\n", use, args[0])
			return nil
		}
		return c
	}
	cmd.AddCommand(status, nodes, remove, leave, voter("promote", "Promote", (*client.Client).Promote), voter("demote", "Demote", (*client.Client).Demote),
		newCACmd(), newRotateCertsCmd())
	return cmd
}

func printNodes(cmd *cobra.Command, ns []api.NodeStatus) {
	var rows [][]string
	for _, n := range ns {
		role := n.Raft
		if role == "" {
			role = "-"
		}
		if n.Leader {
			role += "*"
		}
		rows = append(rows, []string{n.ID, n.Addr, string(n.State), role, n.Domain, humanBytes(n.Used) + " / " + humanBytes(n.Capacity), n.Version})
	}
	table(cmd.OutOrStdout(), []string{"ID", "ADDR", "STATE", "RAFT", "DOMAIN", "USED / CAPACITY", "VERSION"}, rows)
}

func newTokenCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "token", Short: "API tokens (admin)"}
	create := &cobra.Command{Use: "create NAME", Short: "Create a token; it is printed once", Args: cobra.ExactArgs(1)}
	create.Long = `Create a token; its secret is printed once (only its SHA-256 is stored).

Roles: admin (everything), operator (vdisks, flists, the store, workloads;
not tokens, membership, pools or kv), reader (GET only). --prefix limits an
operator or reader token to vdisks and flists whose names start with one
of the prefixes (a clone's source and target both), e.g.

  zos token create ci --role operator --prefix vm-,tmpl-`
	role := create.Flags().String("role", fsm.RoleOperator, "admin, operator or reader")
	prefixes := create.Flags().StringSlice("prefix", nil, "limit the token to vdisk and flist names starting with these (comma-separated)")
	create.RunE = func(cmd *cobra.Command, args []string) error {
		resp, err := client.FromEnv().NewToken(cmd.Context(), api.CreateTokenRequest{Name: args[0], Role: *role, Prefixes: *prefixes})
		if err != nil {
			return err
		}
		fmt.Fprintln(cmd.OutOrStdout(), resp.Token)
		return nil
	}
	list := &cobra.Command{Use: "list", Short: "List tokens (without secrets)", Args: cobra.NoArgs}
	out := addOutputFlag(list)
	list.RunE = func(cmd *cobra.Command, args []string) error {
		ts, err := client.FromEnv().Tokens(cmd.Context())
		if err != nil {
			return err
		}
		return output(*out, cmd.OutOrStdout(), ts, func() {
			var rows [][]string
			for _, t := range ts {
				pre := strings.Join(t.Prefixes, ",")
				if pre == "" {
					pre = "*"
				}
				rows = append(rows, []string{t.ID, t.Name, t.Role, pre, time.Unix(0, t.Created).UTC().Format(time.RFC3339)})
			}
			table(cmd.OutOrStdout(), []string{"ID", "NAME", "ROLE", "NAMES", "CREATED"}, rows)
		})
	}
	del := &cobra.Command{Use: "delete ID", Short: "Delete a token: every node refuses it once this returns", Args: cobra.ExactArgs(1)}
	del.RunE = func(cmd *cobra.Command, args []string) error {
		return client.FromEnv().DeleteToken(cmd.Context(), args[0])
	}
	cmd.AddCommand(create, list, del)
	return cmd
}

func newPoolCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "pool", Short: "Storage pools and their erasure-coding profile"}
	list := &cobra.Command{Use: "list", Short: "List pools", Args: cobra.NoArgs}
	out := addOutputFlag(list)
	list.RunE = func(cmd *cobra.Command, args []string) error {
		ps, err := client.FromEnv().Pools(cmd.Context())
		if err != nil {
			return err
		}
		return output(*out, cmd.OutOrStdout(), ps, func() {
			var rows [][]string
			for _, p := range ps {
				prof := "auto"
				if p.K > 0 {
					prof = strconv.Itoa(p.K) + "+" + strconv.Itoa(p.M)
				}
				rows = append(rows, []string{p.Name, prof})
			}
			table(cmd.OutOrStdout(), []string{"NAME", "PROFILE (k+m)"}, rows)
		})
	}
	create := &cobra.Command{Use: "create NAME K M", Short: "Create a pool with k data + m parity shards", Args: cobra.ExactArgs(3)}
	create.RunE = func(cmd *cobra.Command, args []string) error {
		k, err1 := strconv.Atoi(args[1])
		m, err2 := strconv.Atoi(args[2])
		if err1 != nil || err2 != nil {
			return fmt.Errorf("pool profile: k and m must be numbers, got %q and %q", args[1], args[2])
		}
		return client.FromEnv().CreatePool(cmd.Context(), fsm.PoolArgs{Name: args[0], K: k, M: m})
	}
	del := &cobra.Command{Use: "delete NAME", Short: "Delete an empty pool", Args: cobra.ExactArgs(1)}
	del.RunE = func(cmd *cobra.Command, args []string) error {
		return client.FromEnv().DeletePool(cmd.Context(), args[0])
	}
	cmd.AddCommand(list, create, del)
	return cmd
}
