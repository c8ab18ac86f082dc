package opusd

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"

	"github.com/opus-hosting/opus/internal/config"
	"github.com/opus-hosting/opus/unprivd/store"
)

// maxPEMFile bounds each of etcd_ca_file, etcd_cert_file and
// etcd_key_file: a CA bundle of every public root is some 200 KiB.
const maxPEMFile = 1 << 20

// openStore opens the state store state_store names: the bbolt file
// under base_dir, or the etcd cluster (over https with a client
// certificate: config.Validate refuses etcd otherwise).
func openStore(ctx context.Context, cfg config.Config) (*store.Store, error) {
	if cfg.StateStore != config.StoreEtcd {
		return store.Open(ctx, filepath.Join(cfg.BaseDir, "opusd.db"), store.Options{})
	}
	tc, err := etcdTLS(cfg)
	if err != nil {
		return nil, err
	}
	st, err := store.OpenEtcd(ctx, store.EtcdOptions{Endpoints: cfg.EtcdEndpointList(), Prefix: cfg.EtcdPrefix, TLS: tc, Host: cfg.Host()})
	if err != nil {
		return nil, fmt.Errorf("state_store etcd: %w", err)
	}
	return st, nil
}

// etcdTLS is the TLS configuration opusd talks to etcd with: the CAs of
// etcd_ca_file (the system's roots without it) and the client
// certificate of etcd_cert_file and etcd_key_file. cfg is validated, so
// its endpoints are https:// and it names a certificate and its key.
func etcdTLS(cfg config.Config) (*tls.Config, error) {
	if !cfg.EtcdTLS() || cfg.EtcdCertFile == "" {
		// config.Validate refuses this; a caller that skipped it must
		// not get a client that talks to etcd in clear.
		return nil, errors.New("state_store etcd: needs https:// etcd_endpoints and etcd_cert_file, etcd_key_file")
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.EtcdCAFile != "" {
		data, err := readPEMFile("etcd_ca_file", cfg.EtcdCAFile)
		if err != nil {
			return nil, err
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(data) {
			return nil, fmt.Errorf("etcd_ca_file %s: no PEM certificate in it", cfg.EtcdCAFile)
		}
	}
	crt, err := readPEMFile("etcd_cert_file", cfg.EtcdCertFile)
	if err != nil {
		return nil, err
	}
	key, err := readPEMFile("etcd_key_file", cfg.EtcdKeyFile)
	if err != nil {
		return nil, err
	}

	pair, err := tls.X509KeyPair(crt, key)
	if err != nil {
		return nil, fmt.Errorf("etcd_cert_file %s and etcd_key_file %s: not a certificate and its key: %w", cfg.EtcdCertFile, cfg.EtcdKeyFile, err)
	}
	tc.Certificates = []tls.Certificate{pair}
	return tc, nil
}

// readPEMFile reads the regular file path of opus.conf's key, at most
// maxPEMFile bytes. It opens without blocking, so a FIFO put there makes
// an error rather than a hang at start. etcd_key_file must be readable by
// its owner alone.
func readPEMFile(key, path string) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", key, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", key, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s %s: not a regular file", key, path)
	}
	if perm := fi.Mode().Perm(); key == "etcd_key_file" && perm&0o077 != 0 {
		// As OpenSSH refuses an unprotected private key: whoever reads
		// it talks to etcd as opusd, and so can rewrite every host's
		// projects; on a host whose projects run code, a key its group
		// or others can read is theirs.
		return nil, fmt.Errorf("%s %s: mode %04o lets other users read it, and with it rewrite Opus's state in etcd; make it opusd's user's alone (chmod 0400)", key, path, perm)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxPEMFile+1))
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", key, path, err)
	}
	if len(data) > maxPEMFile {
		return nil, fmt.Errorf("%s %s: larger than %d bytes; give a PEM file", key, path, maxPEMFile)
	}
	if len(data) == 0 {
		return nil, errors.New(key + " " + path + ": empty; give a PEM file")
	}
	return data, nil
}

// hostInstance is this host's instance id (store.Host.Instance), kept in
// base_dir/host-instance: made once, then read at every start, so that
// the host's restarted opusd takes its own registration back and another
// host claiming the same host_name is refused.
func hostInstance(baseDir string) (string, error) {
	path := filepath.Join(baseDir, "host-instance")
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err == nil {
		defer f.Close()
		b, err := io.ReadAll(io.LimitReader(f, 65))
		id := string(bytes.TrimSpace(b))
		if err != nil || len(id) != 32 {
			return "", fmt.Errorf("%s: not an instance id (32 hex digits); remove it to make a new one", path)
		}
		return id, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	id := hex.EncodeToString(b[:])
	if err := os.WriteFile(path+".new", []byte(id+"\n"), 0o600); err != nil {
		return "", err
	}
	if err := os.Link(path+".new", path); err != nil {
		os.Remove(path + ".new")
		if errors.Is(err, os.ErrExist) {
			return hostInstance(baseDir) // made meanwhile
		}
		return "", err
	}
	os.Remove(path + ".new")
	return id, nil
}
