package opusd

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opus-hosting/opus/internal/cert"
	"github.com/opus-hosting/opus/internal/config"
)

// TestEtcdTLS: the TLS files are read as the configuration names them,
// and each way one can be wrong is refused naming its key and its file.
func TestEtcdTLS(t *testing.T) {
	dir := t.TempDir()
	crt, key, err := cert.SelfSigned([]string{"etcd.example"}, time.Now(), time.Hour, 2)
	if err != nil {
		t.Fatal(err)
	}
	otherCrt, _, err := cert.SelfSigned([]string{"other.example"}, time.Now(), time.Hour, 2)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	ca, c, k := write("ca.pem", crt), write("c.crt", crt), write("c.key", key)
	other := write("other.crt", otherCrt)
	big := write("big.pem", make([]byte, maxPEMFile+1))
	empty := write("empty.pem", nil)
	notPEM := write("not.pem", []byte("hello\n"))
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.pem")
	// A key others can read: any project's code on the host could take
	// it and talk to etcd as opusd (issue 20 attack).
	keyOthers, keyGroup := write("others.key", key), write("group.key", key)
	for p, mode := range map[string]os.FileMode{keyOthers: 0o644, keyGroup: 0o640} {
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name, endpoints, ca, crt, key string
		wantErr                       string
		check                         func(*testing.T, *config.Config)
	}{
		{name: "https with system roots", endpoints: "https://etcd.example:2379", crt: c, key: k},
		{name: "https with a CA and a client certificate", endpoints: "https://etcd.example:2379", ca: ca, crt: c, key: k},
		{name: "missing CA", endpoints: "https://etcd.example:2379", ca: missing, crt: c, key: k, wantErr: "etcd_ca_file: open " + missing},
		{name: "CA not PEM", endpoints: "https://etcd.example:2379", ca: notPEM, crt: c, key: k, wantErr: "etcd_ca_file " + notPEM + ": no PEM certificate"},
		{name: "CA too large", endpoints: "https://etcd.example:2379", ca: big, crt: c, key: k, wantErr: "etcd_ca_file " + big + ": larger than"},
		{name: "CA empty", endpoints: "https://etcd.example:2379", ca: empty, crt: c, key: k, wantErr: "etcd_ca_file " + empty + ": empty"},
		{name: "CA a FIFO", endpoints: "https://etcd.example:2379", ca: fifo, crt: c, key: k, wantErr: "etcd_ca_file " + fifo + ": not a regular file"},
		{name: "CA a directory", endpoints: "https://etcd.example:2379", ca: dir, crt: c, key: k, wantErr: "etcd_ca_file " + dir + ": not a regular file"},
		{name: "certificate a FIFO", endpoints: "https://etcd.example:2379", ca: ca, crt: fifo, key: k, wantErr: "etcd_cert_file " + fifo + ": not a regular file"},
		{name: "certificate not PEM", endpoints: "https://etcd.example:2379", ca: ca, crt: notPEM, key: k, wantErr: "etcd_cert_file " + notPEM + " and etcd_key_file " + k + ": not a certificate and its key"},
		{name: "key missing", endpoints: "https://etcd.example:2379", crt: c, key: missing, wantErr: "etcd_key_file: open " + missing},
		{name: "key too large", endpoints: "https://etcd.example:2379", crt: c, key: big, wantErr: "etcd_key_file " + big + ": larger than"},
		{name: "key readable by others", endpoints: "https://etcd.example:2379", crt: c, key: keyOthers, wantErr: "etcd_key_file " + keyOthers + ": mode 0644 lets other users read it"},
		{name: "key readable by its group", endpoints: "https://etcd.example:2379", crt: c, key: keyGroup, wantErr: "etcd_key_file " + keyGroup + ": mode 0640 lets other users read it"},
		{name: "key of another certificate", endpoints: "https://etcd.example:2379", crt: other, key: k, wantErr: "etcd_cert_file " + other + " and etcd_key_file " + k + ": not a certificate and its key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := config.Default()
			cfg.StateStore, cfg.EtcdEndpoints, cfg.EtcdCAFile, cfg.EtcdCertFile, cfg.EtcdKeyFile = config.StoreEtcd, tt.endpoints, tt.ca, tt.crt, tt.key
			if err := cfg.Validate(); err != nil {
				t.Fatalf("the test's configuration: %v", err)
			}
			tc, err := etcdTLS(cfg)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("etcdTLS: %v, want an error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc == nil {
				t.Fatalf("no TLS config for %s", tt.endpoints)
			}
			if (tc.RootCAs != nil) != (tt.ca != "") || len(tc.Certificates) != 1 {
				t.Errorf("TLS config: roots %v, %d certificates; want the CA file's roots (%q) and the client certificate (%q)", tc.RootCAs, len(tc.Certificates), tt.ca, tt.crt)
			}
		})
	}
	// A configuration that skipped Validate still gets no client that
	// talks to etcd in clear or without a certificate.
	for _, endpoints := range []string{"http://127.0.0.1:2379", "https://etcd.example:2379"} {
		cfg := config.Default()
		cfg.StateStore, cfg.EtcdEndpoints, cfg.EtcdCAFile = config.StoreEtcd, endpoints, ca
		if tc, err := etcdTLS(cfg); err == nil || !strings.Contains(err.Error(), "etcd_cert_file") {
			t.Errorf("etcdTLS(%s without a certificate) = %v, %v; want an error", endpoints, tc, err)
		}
	}
}
