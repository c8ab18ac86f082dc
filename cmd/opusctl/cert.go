package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/spf13/cobra"

	"github.com/opus-hosting/opus/client"
	opusv1 "github.com/opus-hosting/opus/proto/opus/v1"
)

// maxPEM bounds a certificate chain or key file read for `cert set`.
const maxPEM = 1 << 20

func (c *cli) certCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cert",
		Short: "Manage a project's TLS certificate",
		Long: `cert manages the TLS certificate of a project's virtual host. A project
starts with a self-signed certificate; 'cert set' installs your own.`,
		Example: `  opusctl cert set blog --cert fullchain.pem --key privkey.pem`,
		Args:    cobra.NoArgs,
		// Runnable, so that an unknown subcommand is a usage error (Args
		// applies) instead of a silent help page.
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	var certFile, keyFile string
	set := &cobra.Command{
		Use:   "set NAME --cert FILE --key FILE",
		Short: "Install your own certificate and key",
		Long: `cert set installs your own certificate for project NAME. The files are read
by opusctl with your own rights and sent to opusd, which checks that the key
matches the certificate, that the certificate names the project's host, and
that the host's OpenSSL would load it at the TLS security level the host
serves (tls_security_level in opus.conf, 2 by default: an RSA key of at
least 2048 bits or an ECDSA key of at least 256, no chain certificate signed
with SHA-1 or MD5), before Apache sees it.

--cert is PEM: the leaf certificate first, then its chain. --key is the
leaf's private key, PEM.`,
		Example:           `  opusctl cert set blog --cert /etc/letsencrypt/live/blog/fullchain.pem --key /etc/letsencrypt/live/blog/privkey.pem`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: c.completeProjects,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := requireFlags(cmd.Flags(), "cert", "key"); err != nil {
				return err
			}
			certPEM, err := readSmallFile(certFile)
			if err != nil {
				return err
			}
			keyPEM, err := readSmallFile(keyFile)
			if err != nil {
				return err
			}
			return c.withClient(cmd, func(ctx context.Context, cl *client.Client) error {
				return c.change(ctx, cl, "Installing the certificate of "+args[0], true, func() (*opusv1.Operation, error) {
					return cl.SetCertificate(ctx, args[0], certPEM, keyPEM)
				})
			})
		},
	}
	set.Flags().StringVar(&certFile, "cert", "", "PEM file with the certificate and its chain")
	set.Flags().StringVar(&keyFile, "key", "", "PEM file with the private key")
	cmd.AddCommand(set)
	return cmd
}

// readSmallFile reads a PEM file, refusing one too large to be one.
// A file that is not there, not readable by the caller or too large is a
// mistake in what was given (exit status 2).
func readSmallFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, fs.ErrPermission) {
		return nil, usageError{err}
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxPEM+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(b) > maxPEM {
		return nil, usagef("%s is larger than %d bytes; is it really a PEM file?", path, maxPEM)
	}
	return b, nil
}
