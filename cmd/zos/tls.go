package main

import (
	"crypto/tls"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/zosproject/zos/internal/pki"
	"github.com/zosproject/zos/orchestrator/client"
)

// newCACmd: zos cluster ca > ca.pem.
func newCACmd() *cobra.Command {
	cmd := &cobra.Command{Use: "ca", Short: "Print the cluster CA certificate (PEM): zos cluster ca > ca.pem; export ZOS_CACERT=ca.pem", Args: cobra.NoArgs}
	insecure := cmd.Flags().Bool("insecure", false, "fetch it without verifying the node (trust on first use: compare the printed fingerprint with a node's DIR/tls/ca.pem)")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		c := client.FromEnv()
		if *insecure {
			c = client.NewTLS(c.Addr, c.Token, &tls.Config{InsecureSkipVerify: true})
		}
		b, err := c.ClusterCA(cmd.Context())
		if err != nil {
			return err
		}
		ca, err := pki.ParseCert(b)
		if err != nil {
			return fmt.Errorf("the node answered no certificate: %w", err)
		}
		fmt.Fprintf(os.Stderr, "cluster CA %q, SHA-256 %s, expires %s\n", ca.Subject.CommonName, pki.Fingerprint(ca), ca.NotAfter.Format("2006-01-02"))
		_, err = cmd.OutOrStdout().Write(b)
		return err
	}
	return cmd
}

// newRotateCertsCmd: zos cluster rotate-certs.
func newRotateCertsCmd() *cobra.Command {
	return &cobra.Command{Use: "rotate-certs", Short: "Re-issue every node's certificate (admin); nodes switch without downtime, down nodes when they return", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := client.FromEnv().RotateCerts(cmd.Context()); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), "rotation requested: every node re-issues its certificate (see zos_tls_cert_expiry_seconds in /metrics)")
			return nil
		}}
}
