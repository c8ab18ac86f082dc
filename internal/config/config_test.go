package config

import (
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name, in, wantErr string
		check             func(Config) bool
	}{
		{name: "empty is defaults", in: "", check: func(c Config) bool { return c == Default() }},
		{name: "comments and values", in: "# x\nbase_dir /srv/opus\nhttp_port 80\nhttps_port 443\n", check: func(c Config) bool {
			return c.BaseDir == "/srv/opus" && c.HTTPPort == 80 && c.HTTPSPort == 443
		}},
		{name: "unknown key", in: "bogus 1\n", wantErr: `:1: unknown key "bogus"`},
		{name: "bad number", in: "http_port eighty\n", wantErr: "not a number"},
		{name: "relative path", in: "base_dir var/lib\n", wantErr: "clean absolute path"},
		{name: "unclean path", in: "base_dir /var/../etc\n", wantErr: "clean absolute path"},
		{name: "bad mode", in: "apache_mode nginx\n", wantErr: "apache_mode"},
		{name: "no capacity", in: "host_capacity 0\n", wantErr: "host_capacity: 0 is not a number of projects"},
		{name: "peer by name", in: "peer_listen web1:7443\n", wantErr: "peer_listen: \"web1:7443\" is not IP:PORT"},
		{name: "peer address alone", in: "peer_address web1:7443\n", wantErr: "peer_address: set, but peer_listen is not"},
		{name: "front without port", in: "host_front web1.example.com\n", wantErr: "host_front: \"web1.example.com\" is not HOST:PORT"},
		{name: "same ports", in: "http_port 8443\n", wantErr: "both 8443"},
		{name: "suffix without dot", in: "server_suffix example.com\n", wantErr: "start with a dot"},
		{name: "suffix injection", in: "server_suffix .a\"b\n", wantErr: "may hold only"},
		{name: "root opus user", in: "opus_user root\n", wantErr: "unprivileged"},
		{name: "postgres admin keeps its spaces", in: "postgres_admin host=/var/run/postgresql user=opus dbname=postgres\n", check: func(c Config) bool {
			return c.PostgresAdmin == "host=/var/run/postgresql user=opus dbname=postgres"
		}},
		{name: "git limit", in: "git_max_bytes 2097152\n", check: func(c Config) bool { return c.GitMaxBytes == 2<<20 }},
		{name: "git limit too small", in: "git_max_bytes 1000\n", wantErr: "git_max_bytes"},
		{name: "user prefix", in: "user_prefix tk3j9a-\n", check: func(c Config) bool { return c.UserPrefix == "tk3j9a-" }},
		{name: "user prefix too long", in: "user_prefix abcdefghij-\n", wantErr: "user_prefix"},
		{name: "user prefix without dash", in: "user_prefix opus\n", wantErr: "end with '-'"},
		{name: "uid range", in: "project_uids 200000-299999\n", check: func(c Config) bool {
			return c.ProjectUIDs == UIDRange{First: 200000, Last: 299999} && c.ProjectUIDs.Contains(200000) && !c.ProjectUIDs.Contains(300000)
		}},
		{name: "uid range not a range", in: "project_uids 5000\n", wantErr: "not a range"},
		{name: "uid range of system ids", in: "project_uids 100-2000\n", wantErr: "1000-2147483647"},
		{name: "uid range past signed ids", in: "project_uids 2147483000-2147483648\n", wantErr: "1000-2147483647"},
		{name: "uid range too small", in: "project_uids 70000-70005\n", wantErr: "at least 10"},
		{name: "uid range holding nobody", in: "project_uids 65000-66000\n", wantErr: "65534"},
		{name: "uid range backwards", in: "project_uids 80000-70000\n", wantErr: "first id is above the last"},
		{name: "tls level", in: "tls_security_level 3\n", check: func(c Config) bool { return c.TLSSecurityLevel == 3 }},
		{name: "tls level out of range", in: "tls_security_level 6\n", wantErr: "tls_security_level"},
		{name: "upload quota", in: "upload_quota 2097152\n", check: func(c Config) bool { return c.UploadQuota == 2<<20 }},
		{name: "upload quota too small", in: "upload_quota 10\n", wantErr: "upload_quota"},
		{name: "upload grace", in: "upload_grace 90m\n", check: func(c Config) bool { return c.UploadGrace == 90*time.Minute }},
		{name: "upload grace default", in: "", check: func(c Config) bool { return c.UploadGrace == time.Hour }},
		{name: "upload grace not a duration", in: "upload_grace 3600\n", wantErr: "not a duration"},
		{name: "upload grace too short", in: "upload_grace 10ms\n", wantErr: "shorter than a second"},
		{name: "snapshot defaults", in: "", check: func(c Config) bool { return c.SnapshotMaxBytes == 256<<20 && c.SnapshotKeep == 5 }},
		{name: "snapshot bytes", in: "snapshot_max_bytes 1048576\n", check: func(c Config) bool { return c.SnapshotMaxBytes == 1<<20 }},
		{name: "snapshots off", in: "snapshot_max_bytes 0\n", check: func(c Config) bool { return c.SnapshotMaxBytes == 0 }},
		{name: "snapshot bytes too large", in: "snapshot_max_bytes 68719476737\n", wantErr: "snapshot_max_bytes"},
		{name: "snapshot keep", in: "snapshot_keep 2\n", check: func(c Config) bool { return c.SnapshotKeep == 2 }},
		{name: "snapshot keep zero", in: "snapshot_keep 0\n", wantErr: "snapshot_keep"},
		{name: "disk defaults", in: "", check: func(c Config) bool {
			return c.RevisionsKeep == 10 && c.SnapshotQuota == 2<<30 && c.GitCacheMaxBytes == 1<<30 && c.GitCacheIdle == 720*time.Hour
		}},
		{name: "revisions keep", in: "revisions_keep 3\n", check: func(c Config) bool { return c.RevisionsKeep == 3 }},
		{name: "revisions keep zero", in: "revisions_keep 0\n", wantErr: "revisions_keep: 0 must lie in 1-100"},
		{name: "revisions keep too many", in: "revisions_keep 101\n", wantErr: "revisions_keep"},
		{name: "snapshot quota", in: "snapshot_quota 1048576\n", check: func(c Config) bool { return c.SnapshotQuota == 1<<20 }},
		{name: "snapshot quota off", in: "snapshot_quota 0\n", check: func(c Config) bool { return c.SnapshotQuota == 0 }},
		{name: "snapshot quota negative", in: "snapshot_quota -1\n", wantErr: "snapshot_quota"},
		{name: "git cache bytes", in: "git_cache_max_bytes 536870912\n", check: func(c Config) bool { return c.GitCacheMaxBytes == 512<<20 }},
		{name: "git cache below one fetch", in: "git_cache_max_bytes 1048576\n", wantErr: "below git_max_bytes"},
		{name: "git cache idle", in: "git_cache_idle 48h\n", check: func(c Config) bool { return c.GitCacheIdle == 48*time.Hour }},
		{name: "git cache idle too short", in: "git_cache_idle 5s\n", wantErr: "git_cache_idle"},
		{name: "git cache idle not a duration", in: "git_cache_idle 7\n", wantErr: "not a duration"},
		{name: "metrics off by default", in: "", check: func(c Config) bool { return c.MetricsListen == "" && !c.MetricsAllowRemote }},
		{name: "metrics on loopback", in: "metrics_listen 127.0.0.1:9464\n", check: func(c Config) bool { return c.MetricsListen == "127.0.0.1:9464" }},
		{name: "metrics on IPv6 loopback", in: "metrics_listen [::1]:9464\n", check: func(c Config) bool { return c.MetricsListen == "[::1]:9464" }},
		{name: "metrics on other loopback", in: "metrics_listen 127.0.0.53:9464\n", check: func(c Config) bool { return c.MetricsListen == "127.0.0.53:9464" }},
		{name: "metrics off again", in: "metrics_listen\n", check: func(c Config) bool { return c.MetricsListen == "" }},
		{name: "metrics without port", in: "metrics_listen 127.0.0.1\n", wantErr: "metrics_listen: \"127.0.0.1\" is not an IP address and a port"},
		{name: "metrics port 0", in: "metrics_listen 127.0.0.1:0\n", wantErr: "port 1-65535"},
		{name: "metrics port too large", in: "metrics_listen 127.0.0.1:65536\n", wantErr: "port 1-65535"},
		{name: "metrics host name", in: "metrics_listen localhost:9464\n", wantErr: "not an IP address"},
		{name: "metrics all interfaces", in: "metrics_listen 0.0.0.0:9464\n", wantErr: "not a loopback address"},
		{name: "metrics all interfaces, no host", in: "metrics_listen :9464\n", wantErr: "not an IP address"},
		{name: "metrics public address", in: "metrics_listen 192.0.2.7:9464\n", wantErr: "metrics_allow_remote yes"},
		{name: "metrics v4-mapped public", in: "metrics_listen [::ffff:192.0.2.7]:9464\n", wantErr: "not a loopback address"},
		{name: "metrics port with a leading zero", in: "metrics_listen 127.0.0.1:09464\n", wantErr: "write it as 127.0.0.1:9464"},
		{name: "metrics IPv6 not canonical", in: "metrics_listen [0:0::1]:9464\n", wantErr: "write it as [::1]:9464"},
		{name: "metrics zone", in: "metrics_listen [fe80::1%eth0]:9464\nmetrics_allow_remote yes\n", wantErr: "zone"},
		{name: "metrics remote allowed", in: "metrics_allow_remote yes\nmetrics_listen 192.0.2.7:9464\n", check: func(c Config) bool {
			return c.MetricsListen == "192.0.2.7:9464" && c.MetricsAllowRemote
		}},
		{name: "metrics remote not a switch", in: "metrics_allow_remote true\n", wantErr: "neither yes nor no"},
		{name: "acme off by default", in: "", check: func(c Config) bool { return !c.ACME() && c.ACMECheckInterval == time.Hour }},
		{name: "acme", in: "acme_directory https://acme-v02.api.letsencrypt.org/directory\nacme_email ops@example.com\nacme_ca_bundle /etc/opus/ca.pem\nacme_check_interval 5m\n", check: func(c Config) bool {
			return c.ACME() && c.ACMEDirectory == LetsEncryptDirectory && c.ACMEEmail == "ops@example.com" && c.ACMECABundle == "/etc/opus/ca.pem" && c.ACMECheckInterval == 5*time.Minute
		}},
		{name: "acme over http", in: "acme_directory http://ca.example/dir\n", wantErr: "must be an https URL"},
		{name: "acme not a URL", in: "acme_directory letsencrypt\n", wantErr: "must be an https URL"},
		{name: "acme with credentials", in: "acme_directory https://u:p@ca.example/dir\n", wantErr: "must be an https URL"},
		{name: "acme email", in: "acme_directory https://ca.example/dir\nacme_email not-an-address\n", wantErr: "acme_email"},
		{name: "acme bundle relative", in: "acme_directory https://ca.example/dir\nacme_ca_bundle ca.pem\n", wantErr: "acme_ca_bundle"},
		{name: "acme interval too short", in: "acme_check_interval 10ms\n", wantErr: "acme_check_interval"},
		{name: "acme interval not a duration", in: "acme_check_interval 60\n", wantErr: "acme_check_interval"},
		{name: "state store defaults", in: "", check: func(c Config) bool {
			return c.StateStore == StoreBbolt && c.EtcdEndpoints == "" && c.EtcdPrefix == "/opus/" && c.HostName == "" && c.EtcdEndpointList() == nil
		}},
		{name: "etcd", in: "state_store etcd\netcd_endpoints https://127.0.0.1:2379, https://[::1]:22379\netcd_prefix /opus/web/\netcd_cert_file /etc/opus/etcd.crt\netcd_key_file /etc/opus/etcd.key\n", check: func(c Config) bool {
			l := c.EtcdEndpointList()
			return c.StateStore == StoreEtcd && len(l) == 2 && l[0] == "https://127.0.0.1:2379" && l[1] == "https://[::1]:22379" && c.EtcdPrefix == "/opus/web/" && c.EtcdTLS() && c.EtcdCAFile == ""
		}},
		{name: "etcd over TLS", in: "state_store etcd\netcd_endpoints https://etcd1.example.com:2379,https://etcd2.example.com:2379/\netcd_ca_file /etc/opus/etcd-ca.pem\netcd_cert_file /etc/opus/etcd.crt\netcd_key_file /etc/opus/etcd.key\n", check: func(c Config) bool {
			return c.EtcdTLS() && c.EtcdCAFile == "/etc/opus/etcd-ca.pem" && c.EtcdCertFile == "/etc/opus/etcd.crt" && c.EtcdKeyFile == "/etc/opus/etcd.key"
		}},
		{name: "etcd over TLS with the system's roots", in: "state_store etcd\netcd_endpoints https://etcd.example.com:2379\netcd_cert_file /etc/opus/etcd.crt\netcd_key_file /etc/opus/etcd.key\n", check: func(c Config) bool {
			return c.EtcdTLS() && c.EtcdCAFile == "" && c.EtcdCertFile == "/etc/opus/etcd.crt"
		}},
		// A cluster that serves whoever connects serves every project's
		// code too: state_store etcd needs https and a client certificate.
		{name: "etcd over http", in: "state_store etcd\netcd_endpoints http://127.0.0.1:2379\n", wantErr: "state_store etcd: give https:// etcd_endpoints and opusd's client certificate (etcd_cert_file, etcd_key_file)"},
		{name: "etcd over https without a client certificate", in: "state_store etcd\netcd_endpoints https://etcd.example.com:2379\netcd_ca_file /etc/opus/etcd-ca.pem\n", wantErr: "state_store etcd: give https:// etcd_endpoints and opusd's client certificate (etcd_cert_file, etcd_key_file)"},
		{name: "etcd endpoints without state_store etcd", in: "etcd_endpoints http://127.0.0.1:2379\n", check: func(c Config) bool { return c.StateStore == StoreBbolt }},
		{name: "state store unknown", in: "state_store consul\n", wantErr: `state_store: "consul" is neither "bbolt"`},
		{name: "state store case", in: "state_store ETCD\n", wantErr: "state_store"},
		{name: "etcd without endpoints", in: "state_store etcd\n", wantErr: "etcd_endpoints: state_store etcd needs the cluster's client URLs"},
		{name: "etcd endpoint without scheme", in: "etcd_endpoints 127.0.0.1:2379\n", wantErr: `etcd_endpoints: "127.0.0.1:2379" is not a client URL`},
		{name: "etcd endpoint other scheme", in: "etcd_endpoints unix:///run/etcd.sock\n", wantErr: "is not a client URL"},
		{name: "etcd endpoint without port", in: "etcd_endpoints http://etcd.example.com\n", wantErr: "give the port"},
		{name: "etcd endpoint port 0", in: "etcd_endpoints http://etcd.example.com:0\n", wantErr: "give the port"},
		{name: "etcd endpoint with a path", in: "etcd_endpoints http://etcd.example.com:2379/v3\n", wantErr: "is not a client URL"},
		{name: "etcd endpoint with credentials", in: "etcd_endpoints http://root:pw@etcd.example.com:2379\n", wantErr: "is not a client URL"},
		{name: "etcd endpoint empty in the list", in: "etcd_endpoints http://a.example:2379,,http://b.example:2379\n", wantErr: `"" is not a client URL`},
		{name: "etcd endpoints mixed schemes", in: "etcd_endpoints http://a.example:2379,https://b.example:2379\n", wantErr: "mixes http:// and https://"},
		{name: "etcd prefix without leading slash", in: "etcd_prefix opus/\n", wantErr: "etcd_prefix: \"opus/\" must start and end with '/'"},
		{name: "etcd prefix without trailing slash", in: "etcd_prefix /opus\n", wantErr: "must start and end with '/'"},
		{name: "etcd prefix empty", in: "etcd_prefix\n", wantErr: "etcd_prefix"},
		{name: "etcd prefix with a space", in: "etcd_prefix /opus web/\n", wantErr: "no spaces"},
		{name: "etcd prefix not ASCII", in: "etcd_prefix /öpus/\n", wantErr: "printable ASCII"},
		{name: "etcd prefix too long", in: "etcd_prefix /" + strings.Repeat("a", 130) + "/\n", wantErr: "at most 128"},
		{name: "etcd CA relative", in: "etcd_endpoints https://e.example:2379\netcd_ca_file ca.pem\n", wantErr: "etcd_ca_file: \"ca.pem\" must be a clean absolute path"},
		{name: "etcd TLS files with http endpoints", in: "etcd_endpoints http://e.example:2379\netcd_ca_file /etc/opus/ca.pem\n", wantErr: "etcd_ca_file: set, but etcd_endpoints are http://"},
		{name: "etcd client certificate with http endpoints", in: "state_store etcd\netcd_endpoints http://e.example:2379\netcd_cert_file /etc/opus/etcd.crt\netcd_key_file /etc/opus/etcd.key\n", wantErr: "etcd_cert_file: set, but etcd_endpoints are http://"},
		{name: "etcd cert without key", in: "etcd_endpoints https://e.example:2379\netcd_cert_file /etc/opus/etcd.crt\n", wantErr: "give both"},
		{name: "etcd cert without key in use", in: "state_store etcd\netcd_endpoints https://e.example:2379\netcd_cert_file /etc/opus/etcd.crt\n", wantErr: "etcd_cert_file and etcd_key_file: give both, opusd's client certificate and its key (state_store etcd needs them)"},
		{name: "etcd key without cert", in: "etcd_endpoints https://e.example:2379\netcd_key_file /etc/opus/etcd.key\n", wantErr: "give both"},
		{name: "etcd key relative", in: "state_store etcd\netcd_endpoints https://e.example:2379\netcd_cert_file /etc/opus/etcd.crt\netcd_key_file etcd.key\n", wantErr: "etcd_key_file: \"etcd.key\" must be a clean absolute path"},
		{name: "host name", in: "host_name web-1\n", check: func(c Config) bool { return c.HostName == "web-1" && c.Host() == "web-1" }},
		{name: "host name upper case", in: "host_name Web1\n", wantErr: `host_name: "Web1" must be 1 to 63 of a-z`},
		{name: "host name with a dot", in: "host_name web1.example.com\n", wantErr: "host_name"},
		{name: "host name ends with a dash", in: "host_name web-\n", wantErr: "host_name"},
		{name: "host name too long", in: "host_name " + strings.Repeat("a", 64) + "\n", wantErr: "host_name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			err := c.Parse(strings.NewReader(tt.in), "test.conf")
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || !tt.check(c) {
				t.Fatalf("err = %v, config %+v", err, c)
			}
		})
	}
}

func TestLoad(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "none.conf")
	if c, err := Load(missing, true); err != nil || c != Default() {
		t.Fatalf("optional missing file: %v", err)
	}
	if _, err := Load(missing, false); err == nil {
		t.Fatal("required missing file: no error")
	}
	p := filepath.Join(t.TempDir(), "opus.conf")
	if err := os.WriteFile(p, []byte("server_suffix .opus.example.com\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := Load(p, false)
	if err != nil || c.ServerName("blog") != "blog.opus.example.com" {
		t.Fatalf("Load: %v %q", err, c.ServerName("blog"))
	}
}

// TestFormatRoundTrip: what Format writes, Parse reads back to the same
// configuration (the tests write their hosts' opus.conf with it).
func TestFormatRoundTrip(t *testing.T) {
	c := Default()
	c.BaseDir, c.UserPrefix, c.ProjectUIDs, c.HTTPPort = "/srv/o", "tab12-", UIDRange{First: 400000, Last: 409999}, 81
	c.UploadGrace = 90 * time.Second
	c.PostgresAdmin = "host=/var/run/postgresql user=opus dbname=postgres"
	c.MetricsListen, c.MetricsAllowRemote = "[::]:9464", true
	c.ACMEDirectory, c.ACMEEmail, c.ACMECABundle = LetsEncryptDirectory, "hostmaster@example.com", "/etc/opus/acme-ca.pem"
	c.ACMECheckInterval = 5 * time.Minute
	c.StateStore, c.EtcdEndpoints, c.EtcdPrefix = StoreEtcd, "https://a.example:2379,https://b.example:2379", "/opus/t1/"
	c.EtcdCAFile, c.EtcdCertFile, c.EtcdKeyFile, c.HostName = "/etc/opus/ca.pem", "/etc/opus/c.crt", "/etc/opus/c.key", "web2"
	for _, want := range []Config{Default(), c} {
		got := Default()
		got.HTTPPort = 1
		if err := got.Parse(strings.NewReader(want.Format()), "formatted"); err != nil || got != want {
			t.Fatalf("Parse(Format(%+v)) = %+v, %v", want, got, err)
		}
	}
}

// TestShippedConfig keeps the documented default config in step with the
// code: uncommenting every line must give exactly the defaults.
func TestShippedConfig(t *testing.T) {
	data, err := os.ReadFile("../../systemd/opus.conf")
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	n := 0
	for _, l := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(l, "#") && len(l) > 1 && l[1] != ' ' {
			b.WriteString(l[1:] + "\n")
			n++
		}
	}
	c := Default()
	if err := c.Parse(strings.NewReader(b.String()), "opus.conf"); err != nil {
		t.Fatal(err)
	}
	if c != Default() || n != 47 {
		t.Fatalf("shipped config (%d keys) gives %+v, want the defaults", n, c)
	}
}

// FuzzCheckMetricsListen: an address CheckMetricsListen accepts is empty
// or an IP address without a zone and a port 1-65535 that net.Listen
// takes as written, and loopback unless remote addresses are allowed.
func FuzzCheckMetricsListen(f *testing.F) {
	for _, s := range []string{"", "127.0.0.1:9464", "[::1]:9464", "0.0.0.0:9464", ":9464", "localhost:1", "[::ffff:127.0.0.1]:80",
		"127.0.0.1:0", "[fe80::1%eth0]:9", "1.2.3.4:65535", "127.0.0.1:09464", " 127.0.0.1:1"} {
		f.Add(s, false)
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, addr string, allowRemote bool) {
		if CheckMetricsListen(addr, allowRemote) != nil || addr == "" {
			return
		}
		ap, err := netip.ParseAddrPort(addr)
		if err != nil || ap.Port() == 0 || ap.Addr().Zone() != "" {
			t.Fatalf("accepted %q: %v", addr, err)
		}
		if !allowRemote && !ap.Addr().Unmap().IsLoopback() {
			t.Fatalf("accepted %q, not loopback, without metrics_allow_remote", addr)
		}
		host, port, err := net.SplitHostPort(addr)
		if err != nil || net.ParseIP(host) == nil || port != strconv.Itoa(int(ap.Port())) {
			t.Fatalf("accepted %q, which net.Listen reads otherwise (%q %q %v)", addr, host, port, err)
		}
	})
}

func TestHostLabel(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"web1", "web1"},
		{"Web1.example.com", "web1"},
		{"web_1", "web-1"},
		{"-x-", "x"},
		{"", "localhost"},
		{"...", "localhost"},
		{strings.Repeat("a", 70), strings.Repeat("a", 63)},
		{"ünï", "n"},
	} {
		if got := HostLabel(tt.in); got != tt.want {
			t.Errorf("HostLabel(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	if h := Default().Host(); CheckHostLabel(h) != nil {
		t.Errorf("this machine's default host name %q is not a label host_name takes", h)
	}
}

// FuzzHostLabel: whatever the machine's host name, its label is one
// host_name accepts.
func FuzzHostLabel(f *testing.F) {
	for _, s := range []string{"", "web1", "Web1.example.com", "-", "a_b", strings.Repeat("x", 80), "ü-"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if l := HostLabel(s); CheckHostLabel(l) != nil {
			t.Fatalf("HostLabel(%q) = %q, which host_name refuses", s, l)
		}
	})
}

// FuzzEtcdEndpoints: a list checkEtcdEndpoints accepts is URLs of one
// scheme, http or https, each with a host and a port 1-65535 and nothing
// after it.
func FuzzEtcdEndpoints(f *testing.F) {
	for _, s := range []string{"http://127.0.0.1:2379", "https://a:1,https://b:65535", "http://a:0", "http://a:2379/x", "a:1", "http://[::1]:2379", "http://a:1,https://b:1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, list string) {
		scheme, err := checkEtcdEndpoints(list)
		if err != nil {
			return
		}
		for _, e := range (Config{EtcdEndpoints: list}).EtcdEndpointList() {
			u, err := url.Parse(e)
			if err != nil || u.Scheme != scheme || (scheme != "http" && scheme != "https") || u.Hostname() == "" || u.User != nil || strings.Trim(u.Path, "/") != "" {
				t.Fatalf("accepted %q: %q (%v)", list, e, err)
			}
			if p, err := strconv.Atoi(u.Port()); err != nil || p < 1 || p > 65535 {
				t.Fatalf("accepted %q: %q without a port", list, e)
			}
		}
	})
}

// FuzzEtcdStateStore: a configuration that puts the state in etcd talks
// to it over https with a client certificate and its key, whatever the
// etcd_ keys say.
func FuzzEtcdStateStore(f *testing.F) {
	f.Add("https://a.example:2379", "/etc/opus/ca.pem", "/etc/opus/c.crt", "/etc/opus/c.key")
	f.Add("https://a.example:2379", "", "/etc/opus/c.crt", "/etc/opus/c.key")
	f.Add("http://127.0.0.1:2379", "", "", "")
	f.Add("https://a.example:2379", "/etc/opus/ca.pem", "", "")
	f.Add("http://a:1,https://b:1", "", "/c", "/k")
	f.Fuzz(func(t *testing.T, endpoints, ca, crt, key string) {
		c := Default()
		c.StateStore, c.EtcdEndpoints, c.EtcdCAFile, c.EtcdCertFile, c.EtcdKeyFile = StoreEtcd, endpoints, ca, crt, key
		if c.validateStateStore() != nil {
			return
		}
		if !c.EtcdTLS() || c.EtcdCertFile == "" || c.EtcdKeyFile == "" {
			t.Fatalf("accepted state_store etcd with endpoints %q, cert %q, key %q", endpoints, crt, key)
		}
		for _, e := range c.EtcdEndpointList() {
			if !strings.HasPrefix(e, "https://") {
				t.Fatalf("accepted state_store etcd with endpoint %q", e)
			}
		}
	})
}
