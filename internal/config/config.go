// Package config is the host configuration both daemons read: one file
// (default /etc/opus/opus.conf) so that opusd and opus-privd cannot disagree
// about where projects live, which suffix names them or which ports Apache
// serves. The format is sshd_config-like: "key value" per line, '#' starts a
// comment. Flags of either daemon may override single values.
package config

import (
	"bufio"
	"cmp"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/mail"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/opus-hosting/opus/internal/names"
)

// DefaultPath is where the daemons look for the configuration.
const DefaultPath = "/etc/opus/opus.conf"

// Apache modes.
const (
	// ApacheManaged is an Apache instance privd starts itself from a
	// generated httpd.conf with its own ServerRoot and ports.
	ApacheManaged = "managed"
	// ApacheSystem is Debian's own apache2 driven by apache2ctl.
	ApacheSystem = "system"
)

// Config is the host configuration.
type Config struct {
	// BaseDir holds opusd's state and the project trees.
	BaseDir string
	// RunDir holds both sockets.
	RunDir string
	// OpusUser is the user opusd runs as; the only uid privd serves.
	OpusUser string
	// AdminGroup's members may see and change every project.
	AdminGroup string
	// ServerSuffix is appended to a project name to make its host name.
	ServerSuffix string
	// ApacheMode is ApacheManaged or ApacheSystem.
	ApacheMode string
	// ApacheDir is the managed instance's ServerRoot, or in system mode the
	// directory of vhosts the main config includes.
	ApacheDir string
	// ApacheInstance names, in system mode, one of Debian's Apache
	// instances other than the default (README.multiple-instances):
	// "web2" is /etc/apache2-web2, driven by apache2ctl with
	// APACHE_CONFDIR set. Empty is Debian's default /etc/apache2.
	ApacheInstance string
	// HTTPPort and HTTPSPort are Apache's ports for project vhosts.
	HTTPPort, HTTPSPort int
	// BackendPort is the port every project's backend Apache listens on,
	// each at its own loopback address (BackendAddr). It must be below
	// 1024 so that only root can bind it: no tenant can take another
	// project's address before its backend does.
	BackendPort int
	// BackendMemory, BackendTasks and BackendCPU bound each project's
	// backend (its Apache, its mod_wsgi daemon and whatever they start),
	// through a control group of its own where the host has them: bytes
	// of memory, processes and threads, percent of one CPU. 0 is no bound.
	BackendMemory int64
	BackendTasks  int
	BackendCPU    int
	// Python is the interpreter for manage.py (the one mod_wsgi embeds).
	Python string
	// WSGIProcesses and WSGIThreads size each project's daemon group.
	WSGIProcesses, WSGIThreads int
	// PostgresAdmin is the connection string (libpq key=value or URL form)
	// opusd uses to create and drop a role and a database per project when
	// an owner asks Opus to provision PostgreSQL. Empty means Opus does not
	// provision databases. The role needs CREATEROLE and CREATEDB, nothing
	// more; peer authentication over the local socket (as the opus user)
	// keeps any password out of this file.
	PostgresAdmin string
	// GitMaxBytes bounds the bytes one git fetch may write into opusd's
	// cache (objects, packs, refs); a repository past it is refused.
	GitMaxBytes int
	// UserPrefix starts the name of every project user ("opus-" makes
	// opus-blog). Two Opus instances on one host (the end-to-end tests
	// beside a real one, or two "hosts" of a cluster) use different
	// prefixes, so neither can see the other's users as its own.
	UserPrefix string
	// ProjectUIDs is the range project uids and gids are allocated from.
	// Opus owns it: opusd hands out each id once and never again, so a
	// destroyed project's files (in /tmp, say) can never belong to
	// another project; opus-privd refuses an id outside it.
	ProjectUIDs UIDRange
	// TLSSecurityLevel is OpenSSL's security level Apache serves project
	// certificates at (rendered into each vhost, so it is what Apache
	// enforces): a key or signature below it is refused when the
	// certificate is given, before it could stop Apache.
	TLSSecurityLevel int
	// UploadQuota bounds the bytes of uploaded app archives one user may
	// keep stored at once.
	UploadQuota int64
	// UploadGrace is how long an upload no project uses is kept (from
	// when it was sent or last named) before it is pruned: the time a
	// client has between an upload and the call that names it.
	UploadGrace time.Duration
	// SnapshotMaxBytes bounds the bytes of data snapshots kept per
	// project (copies of its database taken before changes that run
	// migrations): a database larger than it is not snapshotted, and the
	// oldest snapshots go when the newest would pass it.
	SnapshotMaxBytes int64
	// SnapshotKeep is how many data snapshots are kept per project.
	SnapshotKeep int
	// SnapshotQuota bounds the bytes of data snapshots one user's
	// projects keep together; 0 is no bound. When a new snapshot would
	// pass it, the user's oldest snapshots no pending restore needs go
	// first; one that cannot fit is not taken (the operation says so).
	SnapshotQuota int64
	// RevisionsKeep is how many revisions of each app are kept (listed,
	// and their uploaded archives and git caches kept for a rollback);
	// a revision a kept data snapshot was taken with is kept too.
	RevisionsKeep int
	// GitCacheMaxBytes bounds one repository's git cache: a larger one
	// is dropped by the disk pruner and fetched afresh when next needed.
	GitCacheMaxBytes int64
	// GitCacheIdle is how long a git cache may go unused before the
	// disk pruner drops it; the cache of a repository no app uses goes
	// at the pruner's next pass.
	GitCacheIdle time.Duration
	// MetricsListen is IP:PORT where opusd serves its metrics in
	// Prometheus's text format over plain HTTP; empty (the default) serves
	// none. The metrics name every project (its certificate's expiry), so
	// an address other than loopback needs MetricsAllowRemote.
	MetricsListen string
	// MetricsAllowRemote lets MetricsListen be an address other than
	// loopback: the operator says a firewall keeps it to the scraper.
	MetricsAllowRemote bool
	// ACMEDirectory is the directory URL of the ACME CA opusd obtains
	// every project's certificate from (Let's Encrypt's is
	// LetsEncryptDirectory). Empty, the default, turns ACME off: projects
	// get self-signed certificates. When set, every project without an
	// owner's certificate gets one from the CA, for its host name and its
	// extra host names, validated by HTTP-01 through the front.
	ACMEDirectory string
	// ACMEEmail is the contact address of opusd's ACME account (the CA
	// writes to it about expiring certificates); empty registers none.
	ACMEEmail string
	// ACMECABundle is a PEM file of the CAs that sign the ACME server's own
	// HTTPS certificate, for a private CA (a test CA such as pebble); empty
	// trusts the system's roots, which is right for Let's Encrypt.
	ACMECABundle string
	// ACMECheckInterval is how often opusd looks for certificates due for
	// renewal (a third of their lifetime left) or due for another try.
	ACMECheckInterval time.Duration
	// StateStore is where opusd keeps its state: StoreBbolt (a file under
	// BaseDir, this host alone) or StoreEtcd (an etcd cluster several
	// hosts share).
	StateStore string
	// EtcdEndpoints are the etcd cluster's client URLs, comma-separated
	// as opus.conf writes them (see EtcdEndpointList): all http:// or all
	// https://, each HOST:PORT. Required with StoreEtcd.
	EtcdEndpoints string
	// EtcdPrefix is put before every key opusd writes to etcd, so that
	// several Opus installations (or the tests beside a real one) can
	// share one cluster. It starts and ends with '/'.
	EtcdPrefix string
	// EtcdCAFile is a PEM file of the CAs that sign the etcd servers'
	// certificates; empty trusts the system's roots. EtcdCertFile and
	// EtcdKeyFile are opusd's client certificate and key, for a cluster
	// that authenticates its clients: both or neither.
	EtcdCAFile, EtcdCertFile, EtcdKeyFile string
	// HostName is this host's name in a cluster of Opus hosts: a DNS
	// label. Empty (the default) is the machine's host name made one
	// (see Host).
	HostName string
	// HostCapacity is how many projects this host takes: a new project
	// goes to the live host with the lowest share of its capacity used.
	HostCapacity int
	// HostFront is HOST:PORT where this host's web front answers, as
	// other hosts and users should reach it (a project's name must
	// resolve to its host); empty means Host() and http_port (see Front).
	HostFront string
	// PeerListen is IP:PORT where opusd sends the data of projects moving
	// to other hosts (HTTPS, pinned certificate, one token per move);
	// empty takes part in no move. PeerAddress is HOST:PORT where the
	// other hosts reach it; empty means PeerListen.
	PeerListen, PeerAddress string
}

// State stores.
const (
	// StoreBbolt keeps opusd's state in one bbolt file under BaseDir.
	StoreBbolt = "bbolt"
	// StoreEtcd keeps opusd's state in an etcd cluster.
	StoreEtcd = "etcd"
)

// DefaultEtcdPrefix is etcd_prefix's default.
const DefaultEtcdPrefix = "/opus/"

// maxEtcdPrefix bounds etcd_prefix: it starts every key.
const maxEtcdPrefix = 128

// LetsEncryptDirectory is Let's Encrypt's production ACME directory.
const LetsEncryptDirectory = "https://acme-v02.api.letsencrypt.org/directory"

// ACME reports whether certificates come from an ACME CA.
func (c Config) ACME() bool { return c.ACMEDirectory != "" }

// ACMEWebroot is the directory opusd answers HTTP-01 challenges from:
// it writes each token at .well-known/acme-challenge/TOKEN beneath it,
// and every project's HTTP vhost on the front serves that path from there
// (opus-privd renders it; ACMEChallengeDir). It belongs to the opus user,
// never to a project: a tenant must not answer challenges for names that
// are not its own.
func (c Config) ACMEWebroot() string { return filepath.Join(c.BaseDir, "acme", "webroot") }

// ACMEChallengeDir is the directory the front serves
// /.well-known/acme-challenge/ from.
func (c Config) ACMEChallengeDir() string {
	return filepath.Join(c.ACMEWebroot(), ".well-known", "acme-challenge")
}

// MaxRevisionsKeep is the largest revisions_keep: an app's history lives
// in its project's record, which stays small.
const MaxRevisionsKeep = 100

// MaxSnapshotBytes is the largest snapshot_max_bytes.
const MaxSnapshotBytes = 64 << 30

// UIDRange is an inclusive range of uids (and the gids of the same
// numbers).
type UIDRange struct{ First, Last uint32 }

// Contains reports whether id is in r.
func (r UIDRange) Contains(id uint32) bool { return id >= r.First && id <= r.Last }

// String is the range as opus.conf writes it, "FIRST-LAST".
func (r UIDRange) String() string { return fmt.Sprintf("%d-%d", r.First, r.Last) }

// ParseUIDRange reads "FIRST-LAST". Both ends must lie in 1000–2147483647
// (no system ids, nothing a signed 32-bit id would turn negative), avoid
// 65534 and 65535 (nobody and 16-bit -1), and span at least 10 ids.
func ParseUIDRange(s string) (UIDRange, error) {
	a, b, ok := strings.Cut(s, "-")
	first, err1 := strconv.ParseUint(strings.TrimSpace(a), 10, 32)
	last, err2 := strconv.ParseUint(strings.TrimSpace(b), 10, 32)
	if !ok || err1 != nil || err2 != nil {
		return UIDRange{}, fmt.Errorf("%q is not a range FIRST-LAST such as 70000-99999", s)
	}
	r := UIDRange{First: uint32(first), Last: uint32(last)}
	switch {
	case r.First < 1000 || r.Last > 1<<31-1:
		return r, fmt.Errorf("%s: both ends must lie in 1000-2147483647", r)
	case r.Last < r.First:
		return r, fmt.Errorf("%s: the first id is above the last; write the range low-high", r)
	case r.Last < r.First+9:
		return r, fmt.Errorf("%s: the range must hold at least 10 ids", r)
	case r.Contains(65534) || r.Contains(65535):
		return r, fmt.Errorf("%s: the range must not hold 65534 (nobody) or 65535", r)
	}
	return r, nil
}

// Default returns the configuration used when no file says otherwise.
func Default() Config {
	return Config{
		BaseDir:       "/var/lib/opus",
		RunDir:        "/run/opus",
		OpusUser:      "opus",
		AdminGroup:    "opus-admin",
		ServerSuffix:  ".opus.localhost",
		ApacheMode:    ApacheManaged,
		ApacheDir:     "/var/lib/opus-apache",
		HTTPPort:      8080,
		HTTPSPort:     8443,
		BackendPort:   1023,
		BackendMemory: 1 << 30,
		BackendTasks:  512,
		BackendCPU:    100,
		Python:        "/usr/bin/python3",
		WSGIProcesses: 1,
		WSGIThreads:   10,
		GitMaxBytes:   256 << 20,
		UserPrefix:    names.DefaultUserPrefix,
		// systemd leaves 65536-524287 unused and Debian hands out
		// subordinate ids from 100000: this stays clear of both.
		ProjectUIDs:      UIDRange{First: 70000, Last: 99999},
		TLSSecurityLevel: 2,
		UploadQuota:      1 << 30,
		UploadGrace:      time.Hour,
		SnapshotMaxBytes: 256 << 20,
		SnapshotKeep:     5,
		HostCapacity:     100,
		// The renewal window is weeks for a CA's usual certificates:
		// looking hourly is plenty, and retries are spaced by backoff.
		ACMECheckInterval: time.Hour,
		SnapshotQuota:     2 << 30,
		RevisionsKeep:     10,
		GitCacheMaxBytes:  1 << 30,
		GitCacheIdle:      30 * 24 * time.Hour,
		StateStore:        StoreBbolt,
		EtcdPrefix:        DefaultEtcdPrefix,
	}
}

// BackendLimits bound one project's backend. A zero field is no bound in
// opus.conf, and the host's default in a project's settings.
type BackendLimits struct {
	// MemoryBytes bounds its memory, Tasks its processes and threads,
	// CPUPercent its CPU time (percent of one CPU).
	MemoryBytes int64
	Tasks       int
	CPUPercent  int
}

// Bounds of BackendLimits: the least a Django backend needs, the most that
// means anything on one host.
const (
	MinBackendMemory = 64 << 20
	MaxBackendMemory = 1 << 40
	MinBackendTasks  = 32
	MaxBackendTasks  = 1 << 20
	MinBackendCPU    = 5
	MaxBackendCPU    = 100000
)

// BackendLimits are the host's defaults (backend_memory, backend_tasks,
// backend_cpu).
func (c Config) BackendLimits() BackendLimits {
	return BackendLimits{MemoryBytes: c.BackendMemory, Tasks: c.BackendTasks, CPUPercent: c.BackendCPU}
}

// Validate says which limit is out of bounds; errors name each as prefix
// + memory, tasks or cpu (the keys of opus.conf with prefix "backend_",
// of a project's settings with "").
func (l BackendLimits) Validate(prefix string) error {
	if l.MemoryBytes != 0 && (l.MemoryBytes < MinBackendMemory || l.MemoryBytes > MaxBackendMemory) {
		return fmt.Errorf("%smemory: %d bytes; give 64 MiB (67108864) to 1 TiB", prefix, l.MemoryBytes)
	}
	if l.Tasks != 0 && (l.Tasks < MinBackendTasks || l.Tasks > MaxBackendTasks) {
		return fmt.Errorf("%stasks: %d; give %d to %d processes and threads (a backend's Apache alone needs some 20)", prefix, l.Tasks, MinBackendTasks, MaxBackendTasks)
	}
	if l.CPUPercent != 0 && (l.CPUPercent < MinBackendCPU || l.CPUPercent > MaxBackendCPU) {
		return fmt.Errorf("%scpu: %d; give a percent of one CPU from %d to %d (100 is one CPU, 200 two)", prefix, l.CPUPercent, MinBackendCPU, MaxBackendCPU)
	}
	return nil
}

// Or is l with each zero field taken from def.
func (l BackendLimits) Or(def BackendLimits) BackendLimits {
	l.MemoryBytes = cmp.Or(l.MemoryBytes, def.MemoryBytes)
	l.Tasks = cmp.Or(l.Tasks, def.Tasks)
	l.CPUPercent = cmp.Or(l.CPUPercent, def.CPUPercent)
	return l
}

// maxBackendUID is the largest uid BackendAddr maps into 127.0.0.0/8
// (127.255.255.254 at most).
const maxBackendUID = 1<<24 - 1<<16 - 2

// BackendAddr is the address the backend of the project whose user has
// uid listens on: 127.0.0.0 + 65536 + uid (so 127.1.0.0 and up, never
// 127.0.0.1), at BackendPort. Opus hands out each uid once and never
// again, and so each address: a project's front route can never reach
// another project's backend, even one made later.
func (c Config) BackendAddr(uid uint32) netip.AddrPort {
	n := 127<<24 + 1<<16 + uid
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}), uint16(c.BackendPort))
}

// OpusdSocket is the path of opusd's public socket.
func (c Config) OpusdSocket() string { return filepath.Join(c.RunDir, "opusd.sock") }

// PrivdSocket is the path of opus-privd's socket.
func (c Config) PrivdSocket() string { return filepath.Join(c.RunDir, "privd.sock") }

// ServerName is a project's virtual host name.
func (c Config) ServerName(project string) string { return project + c.ServerSuffix }

// Load reads path over the defaults. A missing file is not an error when
// optional is true (the daemons run on defaults alone).
func Load(path string, optional bool) (Config, error) {
	c := Default()
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) && optional {
		return c, nil
	}
	if err != nil {
		return c, fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	if err := c.Parse(f, path); err != nil {
		return c, err
	}
	return c, nil
}

// Parse applies "key value" lines from r; name is used in error messages.
func (c *Config) Parse(r io.Reader, name string) error {
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		key, value, _ := strings.Cut(line, " ")
		value = strings.TrimSpace(value)
		if err := c.Set(key, value); err != nil {
			return fmt.Errorf("%s:%d: %w", name, n, err)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("config %s: %w", name, err)
	}
	return c.Validate()
}

// Format writes c as opus.conf text, every key, in the order of the
// shipped file; Parse reads it back to c.
func (c Config) Format() string {
	var b strings.Builder
	for _, kv := range [][2]any{
		{"base_dir", c.BaseDir}, {"run_dir", c.RunDir}, {"opus_user", c.OpusUser},
		{"admin_group", c.AdminGroup}, {"server_suffix", c.ServerSuffix},
		{"apache_mode", c.ApacheMode}, {"apache_dir", c.ApacheDir}, {"apache_instance", c.ApacheInstance},
		{"http_port", c.HTTPPort}, {"https_port", c.HTTPSPort}, {"backend_port", c.BackendPort},
		{"backend_memory", c.BackendMemory}, {"backend_tasks", c.BackendTasks}, {"backend_cpu", c.BackendCPU}, {"python", c.Python},
		{"user_prefix", c.UserPrefix}, {"project_uids", c.ProjectUIDs},
		{"tls_security_level", c.TLSSecurityLevel}, {"upload_quota", c.UploadQuota}, {"upload_grace", c.UploadGrace},
		{"wsgi_processes", c.WSGIProcesses}, {"wsgi_threads", c.WSGIThreads},
		{"git_max_bytes", c.GitMaxBytes}, {"postgres_admin", c.PostgresAdmin},
		{"snapshot_max_bytes", c.SnapshotMaxBytes}, {"snapshot_keep", c.SnapshotKeep},
		{"snapshot_quota", c.SnapshotQuota}, {"revisions_keep", c.RevisionsKeep},
		{"git_cache_max_bytes", c.GitCacheMaxBytes}, {"git_cache_idle", c.GitCacheIdle},
		{"metrics_listen", c.MetricsListen}, {"metrics_allow_remote", yesNo(c.MetricsAllowRemote)},
		{"acme_directory", c.ACMEDirectory}, {"acme_email", c.ACMEEmail}, {"acme_ca_bundle", c.ACMECABundle},
		{"acme_check_interval", c.ACMECheckInterval},
		{"state_store", c.StateStore}, {"etcd_endpoints", c.EtcdEndpoints}, {"etcd_prefix", c.EtcdPrefix},
		{"etcd_ca_file", c.EtcdCAFile}, {"etcd_cert_file", c.EtcdCertFile}, {"etcd_key_file", c.EtcdKeyFile},
		{"host_name", c.HostName}, {"host_capacity", c.HostCapacity}, {"host_front", c.HostFront},
		{"peer_listen", c.PeerListen}, {"peer_address", c.PeerAddress},
	} {
		fmt.Fprintf(&b, "%s %v\n", kv[0], kv[1])
	}
	return b.String()
}

// Set sets one key.
func (c *Config) Set(key, value string) error {
	str := map[string]*string{
		"base_dir": &c.BaseDir, "run_dir": &c.RunDir, "opus_user": &c.OpusUser,
		"admin_group": &c.AdminGroup, "server_suffix": &c.ServerSuffix,
		"apache_mode": &c.ApacheMode, "apache_dir": &c.ApacheDir, "apache_instance": &c.ApacheInstance, "python": &c.Python,
		"postgres_admin": &c.PostgresAdmin, "user_prefix": &c.UserPrefix,
		"metrics_listen": &c.MetricsListen,
		"acme_directory": &c.ACMEDirectory, "acme_email": &c.ACMEEmail, "acme_ca_bundle": &c.ACMECABundle,
		"state_store": &c.StateStore, "etcd_endpoints": &c.EtcdEndpoints, "etcd_prefix": &c.EtcdPrefix,
		"etcd_ca_file": &c.EtcdCAFile, "etcd_cert_file": &c.EtcdCertFile, "etcd_key_file": &c.EtcdKeyFile,
		"host_name": &c.HostName, "host_front": &c.HostFront, "peer_listen": &c.PeerListen, "peer_address": &c.PeerAddress,
	}
	num := map[string]*int{
		"http_port": &c.HTTPPort, "https_port": &c.HTTPSPort, "backend_port": &c.BackendPort,
		"backend_tasks": &c.BackendTasks, "backend_cpu": &c.BackendCPU,
		"wsgi_processes": &c.WSGIProcesses, "wsgi_threads": &c.WSGIThreads,
		"git_max_bytes": &c.GitMaxBytes, "tls_security_level": &c.TLSSecurityLevel,
		"snapshot_keep": &c.SnapshotKeep, "revisions_keep": &c.RevisionsKeep, "host_capacity": &c.HostCapacity,
	}
	switch key {
	case "project_uids":
		r, err := ParseUIDRange(value)
		if err != nil {
			return fmt.Errorf("project_uids: %w", err)
		}
		c.ProjectUIDs = r
		return nil
	case "backend_memory":
		return parseBytes(key, value, &c.BackendMemory)
	case "upload_quota":
		return parseBytes(key, value, &c.UploadQuota)
	case "snapshot_max_bytes":
		return parseBytes(key, value, &c.SnapshotMaxBytes)
	case "snapshot_quota":
		return parseBytes(key, value, &c.SnapshotQuota)
	case "git_cache_max_bytes":
		return parseBytes(key, value, &c.GitCacheMaxBytes)
	case "git_cache_idle":
		return parseDuration(key, value, &c.GitCacheIdle)
	case "metrics_allow_remote":
		switch value {
		case "yes":
			c.MetricsAllowRemote = true
		case "no":
			c.MetricsAllowRemote = false
		default:
			return fmt.Errorf("metrics_allow_remote: %q is neither yes nor no", value)
		}
		return nil
	case "upload_grace":
		return parseDuration(key, value, &c.UploadGrace)
	case "acme_check_interval":
		return parseDuration(key, value, &c.ACMECheckInterval)
	}
	if p, ok := str[key]; ok {
		*p = value
		return nil
	}
	if p, ok := num[key]; ok {
		v, err := strconv.Atoi(value)
		if err != nil {
			return fmt.Errorf("%s: %q is not a number", key, value)
		}
		*p = v
		return nil
	}
	return fmt.Errorf("unknown key %q", key)
}

// Validate checks the configuration as a whole.
func (c Config) Validate() error {
	for k, p := range map[string]string{"base_dir": c.BaseDir, "run_dir": c.RunDir, "apache_dir": c.ApacheDir, "python": c.Python} {
		if !filepath.IsAbs(p) || filepath.Clean(p) != p {
			return fmt.Errorf("%s: %q must be a clean absolute path", k, p)
		}
	}
	if c.ApacheMode != ApacheManaged && c.ApacheMode != ApacheSystem {
		return fmt.Errorf("apache_mode: %q is neither %q nor %q", c.ApacheMode, ApacheManaged, ApacheSystem)
	}
	if len(c.ApacheInstance) > 32 || strings.Trim(c.ApacheInstance, "abcdefghijklmnopqrstuvwxyz0123456789-") != "" || strings.HasPrefix(c.ApacheInstance, "-") {
		return fmt.Errorf("apache_instance: %q must be up to 32 of a-z, 0-9 and '-', not starting with '-' (Debian's instance NAME of /etc/apache2-NAME)", c.ApacheInstance)
	}
	for k, p := range map[string]int{"http_port": c.HTTPPort, "https_port": c.HTTPSPort} {
		if p < 1 || p > 65535 {
			return fmt.Errorf("%s: %d is not a TCP port", k, p)
		}
	}
	if c.BackendPort < 1 || c.BackendPort > 1023 {
		return fmt.Errorf("backend_port: %d must be a port below 1024, which only root can bind", c.BackendPort)
	}
	if err := c.BackendLimits().Validate("backend_"); err != nil {
		return fmt.Errorf("%w, or 0 for no bound", err)
	}
	if c.HTTPPort == c.HTTPSPort {
		return fmt.Errorf("http_port and https_port are both %d", c.HTTPPort)
	}
	if c.WSGIProcesses < 1 || c.WSGIProcesses > 32 || c.WSGIThreads < 1 || c.WSGIThreads > 100 {
		return fmt.Errorf("wsgi_processes must be 1-32 and wsgi_threads 1-100")
	}
	if !strings.HasPrefix(c.ServerSuffix, ".") || len(c.ServerSuffix) < 2 {
		return fmt.Errorf("server_suffix: %q must start with a dot, like .opus.example.com", c.ServerSuffix)
	}
	for _, r := range c.ServerSuffix[1:] {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '.') {
			return fmt.Errorf("server_suffix: %q may hold only a-z, 0-9, '-' and '.'", c.ServerSuffix)
		}
	}
	if c.GitMaxBytes < 1<<20 {
		return fmt.Errorf("git_max_bytes: %d is below the least useful limit of 1 MiB (1048576)", c.GitMaxBytes)
	}
	if c.OpusUser == "" || c.OpusUser == "root" {
		return fmt.Errorf("opus_user: %q must name an unprivileged user", c.OpusUser)
	}
	if err := names.ValidateUserPrefix(c.UserPrefix); err != nil {
		return fmt.Errorf("user_prefix: %w", err)
	}
	if _, err := ParseUIDRange(c.ProjectUIDs.String()); err != nil {
		return fmt.Errorf("project_uids: %w", err)
	}
	if c.ProjectUIDs.Last > maxBackendUID {
		return fmt.Errorf("project_uids: %s reaches past %d; each project's backend address is 127.0.0.0 + 65536 + its uid, which must stay in 127.0.0.0/8", c.ProjectUIDs, maxBackendUID)
	}
	if c.TLSSecurityLevel < 0 || c.TLSSecurityLevel > 5 {
		return fmt.Errorf("tls_security_level: %d is not an OpenSSL security level (0-5; Debian's default is 2)", c.TLSSecurityLevel)
	}
	if c.UploadQuota < 1<<20 {
		return fmt.Errorf("upload_quota: %d is below the least useful quota of 1 MiB (1048576)", c.UploadQuota)
	}
	if c.SnapshotMaxBytes < 0 || c.SnapshotMaxBytes > MaxSnapshotBytes {
		return fmt.Errorf("snapshot_max_bytes: %d must lie in 0 (no data snapshots) to %d (64 GiB)", c.SnapshotMaxBytes, int64(MaxSnapshotBytes))
	}
	if c.SnapshotKeep < 1 || c.SnapshotKeep > 100 {
		return fmt.Errorf("snapshot_keep: %d must lie in 1-100", c.SnapshotKeep)
	}
	if err := c.validateACME(); err != nil {
		return err
	}
	if c.SnapshotQuota < 0 {
		return fmt.Errorf("snapshot_quota: %d is negative; give 0 for no quota or a number of bytes", c.SnapshotQuota)
	}
	if c.RevisionsKeep < 1 || c.RevisionsKeep > MaxRevisionsKeep {
		return fmt.Errorf("revisions_keep: %d must lie in 1-%d (1 keeps only the running revision: no rollback)", c.RevisionsKeep, MaxRevisionsKeep)
	}
	if c.GitCacheMaxBytes < int64(c.GitMaxBytes) {
		return fmt.Errorf("git_cache_max_bytes: %d is below git_max_bytes (%d): every fetch would leave a cache to drop", c.GitCacheMaxBytes, c.GitMaxBytes)
	}
	if c.GitCacheIdle < time.Minute {
		return fmt.Errorf("git_cache_idle: %s is shorter than a minute; a cache must outlive the deploy that fetched it", c.GitCacheIdle)
	}
	if c.UploadGrace < time.Second {
		return fmt.Errorf("upload_grace: %s is shorter than a second; an upload must outlive the call that names it", c.UploadGrace)
	}
	if err := CheckMetricsListen(c.MetricsListen, c.MetricsAllowRemote); err != nil {
		return fmt.Errorf("metrics_listen: %w", err)
	}
	if err := c.validateStateStore(); err != nil {
		return err
	}
	if c.HostCapacity < 1 || c.HostCapacity > 1_000_000 {
		return fmt.Errorf("host_capacity: %d is not a number of projects from 1 to 1000000", c.HostCapacity)
	}
	if c.PeerListen != "" {
		if ap, err := netip.ParseAddrPort(c.PeerListen); err != nil || ap.Port() == 0 {
			return fmt.Errorf("peer_listen: %q is not IP:PORT (where opusd sends moving projects' data to the other hosts, such as 10.0.0.21:7443)", c.PeerListen)
		}
	}
	if c.PeerAddress != "" {
		if c.PeerListen == "" {
			return errors.New("peer_address: set, but peer_listen is not: give peer_listen, where opusd listens for the other hosts")
		}
		if _, port, err := net.SplitHostPort(c.PeerAddress); err != nil || port == "" {
			return fmt.Errorf("peer_address: %q is not HOST:PORT (where the other hosts reach peer_listen)", c.PeerAddress)
		}
	}
	if c.HostFront != "" {
		if _, port, err := net.SplitHostPort(c.HostFront); err != nil || port == "" {
			return fmt.Errorf("host_front: %q is not HOST:PORT (where this host's web front answers, such as web1.example.com:443)", c.HostFront)
		}
	}
	if c.HostName != "" {
		if err := CheckHostLabel(c.HostName); err != nil {
			return fmt.Errorf("host_name: %w", err)
		}
	}
	return nil
}

// CheckMetricsListen checks metrics_listen: empty (no metrics), or an IP
// address and a port 1-65535, such as 127.0.0.1:9464 or [::1]:9464. A
// host name is refused (what it resolves to may change under the
// operator); so is an address other than loopback, all interfaces
// included, unless allowRemote: the metrics name every project.
func CheckMetricsListen(addr string, allowRemote bool) error {
	if addr == "" {
		return nil
	}
	ap, err := netip.ParseAddrPort(addr)
	if err != nil || ap.Port() == 0 {
		return fmt.Errorf("%q is not an IP address and a port 1-65535, such as 127.0.0.1:9464 or [::1]:9464", addr)
	}
	if ap.Addr().Zone() != "" {
		return fmt.Errorf("%q: give an address without a zone", addr)
	}
	if ap.String() != addr {
		// One spelling: the one opusd's log and the scrape URL show.
		return fmt.Errorf("%q: write it as %s", addr, ap)
	}
	if !ap.Addr().Unmap().IsLoopback() && !allowRemote {
		return fmt.Errorf("%s is not a loopback address, and the metrics name every project: listen on 127.0.0.1 or ::1, or set metrics_allow_remote yes where a firewall lets only your Prometheus reach it", addr)
	}
	return nil
}

// yesNo is b as opus.conf writes a switch.
func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// parseDuration sets *to to value, a Go duration, for key.
func parseDuration(key, value string, to *time.Duration) error {
	d, err := time.ParseDuration(value)
	if err != nil {
		return fmt.Errorf("%s: %q is not a duration such as 1h or 30m", key, value)
	}
	*to = d
	return nil
}

// parseBytes sets *to to value, a whole number of bytes, for key.
func parseBytes(key, value string, to *int64) error {
	v, err := strconv.ParseInt(value, 10, 64)
	if err != nil {
		return fmt.Errorf("%s: %q is not a number of bytes", key, value)
	}
	*to = v
	return nil
}

// validateACME checks the acme_ keys. The directory must be an https URL
// (a CA's API carries the account's signed requests); a plain http one is
// refused so that a typo cannot send them in clear.
func (c Config) validateACME() error {
	if c.ACMECheckInterval < time.Second || c.ACMECheckInterval > 24*time.Hour {
		return fmt.Errorf("acme_check_interval: %s must lie in 1s-24h", c.ACMECheckInterval)
	}
	if c.ACMEDirectory == "" {
		return nil
	}
	u, err := url.Parse(c.ACMEDirectory)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil {
		return fmt.Errorf("acme_directory: %q must be an https URL such as %s", c.ACMEDirectory, LetsEncryptDirectory)
	}
	if c.ACMEEmail != "" {
		if _, err := mail.ParseAddress(c.ACMEEmail); err != nil || strings.ContainsAny(c.ACMEEmail, "<> ") {
			return fmt.Errorf("acme_email: %q is not an email address such as hostmaster@example.com", c.ACMEEmail)
		}
	}
	if c.ACMECABundle != "" && (!filepath.IsAbs(c.ACMECABundle) || filepath.Clean(c.ACMECABundle) != c.ACMECABundle) {
		return fmt.Errorf("acme_ca_bundle: %q must be a clean absolute path", c.ACMECABundle)
	}
	return nil
}

// validateStateStore checks state_store and the etcd_ keys.
func (c Config) validateStateStore() error {
	switch c.StateStore {
	case StoreBbolt, StoreEtcd:
	default:
		return fmt.Errorf("state_store: %q is neither %q (a file under base_dir, this host alone) nor %q (an etcd cluster)", c.StateStore, StoreBbolt, StoreEtcd)
	}
	if c.StateStore == StoreEtcd && c.EtcdEndpoints == "" {
		return errors.New("etcd_endpoints: state_store etcd needs the cluster's client URLs, comma-separated, such as https://etcd1.example.com:2379,https://etcd2.example.com:2379")
	}
	scheme := ""
	if c.EtcdEndpoints != "" {
		var err error
		if scheme, err = checkEtcdEndpoints(c.EtcdEndpoints); err != nil {
			return fmt.Errorf("etcd_endpoints: %w", err)
		}
	}
	if err := CheckEtcdPrefix(c.EtcdPrefix); err != nil {
		return fmt.Errorf("etcd_prefix: %w", err)
	}
	for _, f := range []struct{ key, path string }{{"etcd_ca_file", c.EtcdCAFile}, {"etcd_cert_file", c.EtcdCertFile}, {"etcd_key_file", c.EtcdKeyFile}} {
		if f.path == "" {
			continue
		}
		if !filepath.IsAbs(f.path) || filepath.Clean(f.path) != f.path {
			return fmt.Errorf("%s: %q must be a clean absolute path", f.key, f.path)
		}
		if scheme == "http" {
			// TLS files beside plain endpoints would be silently unused:
			// the operator meant https.
			return fmt.Errorf("%s: set, but etcd_endpoints are http://; TLS files are used only with https:// endpoints", f.key)
		}
	}
	if (c.EtcdCertFile == "") != (c.EtcdKeyFile == "") {
		if c.StateStore == StoreEtcd {
			// "Or neither" is no way out here: the store needs them.
			return errors.New("etcd_cert_file and etcd_key_file: give both, opusd's client certificate and its key (state_store etcd needs them)")
		}
		return errors.New("etcd_cert_file and etcd_key_file: give both (opusd's client certificate and its key) or neither")
	}
	if c.StateStore == StoreEtcd && (scheme != "https" || c.EtcdCertFile == "") {
		// etcd holds every project's spec and secrets: a cluster that
		// serves whoever connects serves every project's code on every
		// host too.
		return errors.New("state_store etcd: give https:// etcd_endpoints and opusd's client certificate (etcd_cert_file, etcd_key_file), and run etcd with --client-cert-auth: without them any process that reaches etcd, a project's code included, could rewrite Opus's state")
	}
	return nil
}

// EtcdEndpointList is etcd_endpoints as a list of URLs.
func (c Config) EtcdEndpointList() []string {
	if c.EtcdEndpoints == "" {
		return nil
	}
	var out []string
	for _, e := range strings.Split(c.EtcdEndpoints, ",") {
		out = append(out, strings.TrimSpace(e))
	}
	return out
}

// EtcdTLS reports whether opusd talks to etcd over TLS (https://
// endpoints).
func (c Config) EtcdTLS() bool { return strings.HasPrefix(c.EtcdEndpoints, "https://") }

// checkEtcdEndpoints checks a comma-separated list of etcd client URLs and
// returns their one scheme: every URL is http://HOST:PORT or
// https://HOST:PORT (nothing after the port), and all have the same
// scheme, since opusd talks to the cluster with one TLS configuration.
func checkEtcdEndpoints(list string) (string, error) {
	scheme := ""
	for _, e := range strings.Split(list, ",") {
		e = strings.TrimSpace(e)
		u, err := url.Parse(e)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" || u.User != nil ||
			(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
			return "", fmt.Errorf("%q is not a client URL http://HOST:PORT or https://HOST:PORT, such as https://etcd1.example.com:2379", e)
		}
		port, err := strconv.Atoi(u.Port())
		if err != nil || port < 1 || port > 65535 {
			return "", fmt.Errorf("%q: give the port, 1-65535, such as https://%s:2379", e, u.Hostname())
		}
		if scheme != "" && u.Scheme != scheme {
			return "", fmt.Errorf("%q: mixes http:// and https://; give every endpoint the same scheme", list)
		}
		scheme = u.Scheme
	}
	return scheme, nil
}

// CheckEtcdPrefix says why p cannot be etcd_prefix, or returns nil: it
// starts and ends with '/' (so that no installation's keys are a prefix
// of another's: /opus/ and /opus2/, never /opus and /opus2) and holds only
// printable ASCII without spaces, at most 128 characters.
func CheckEtcdPrefix(p string) error {
	if len(p) == 0 || p[0] != '/' || p[len(p)-1] != '/' || len(p) > maxEtcdPrefix {
		return fmt.Errorf("%q must start and end with '/' and be at most %d characters, such as %s", p, maxEtcdPrefix, DefaultEtcdPrefix)
	}
	for _, r := range p {
		if r <= ' ' || r > '~' {
			return fmt.Errorf("%q may hold only printable ASCII characters, no spaces", p)
		}
	}
	return nil
}

// CheckHostLabel says why s cannot be host_name, or returns nil: a DNS
// label of lowercase letters, digits and '-', 1 to 63 characters, not
// starting or ending with '-'.
func CheckHostLabel(s string) error {
	if len(s) < 1 || len(s) > 63 || strings.HasPrefix(s, "-") || strings.HasSuffix(s, "-") ||
		strings.Trim(s, "abcdefghijklmnopqrstuvwxyz0123456789-") != "" {
		return fmt.Errorf("%q must be 1 to 63 of a-z, 0-9 and '-', not starting or ending with '-' (a DNS label, such as web1)", s)
	}
	return nil
}

// Peer is where the other hosts reach this one's peer listener:
// peer_address, or peer_listen; empty when there is none.
func (c Config) Peer() string { return cmp.Or(c.PeerAddress, c.PeerListen) }

// Front is where this host's web front answers: host_front, or Host()
// and http_port.
func (c Config) Front() string {
	if c.HostFront != "" {
		return c.HostFront
	}
	return net.JoinHostPort(c.Host(), strconv.Itoa(c.HTTPPort))
}

// Host is this host's name in a cluster: host_name, or when that is empty
// the machine's host name as a DNS label (see HostLabel).
func (c Config) Host() string {
	if c.HostName != "" {
		return c.HostName
	}
	h, _ := os.Hostname()
	return HostLabel(h)
}

// HostLabel makes a machine's host name a DNS label host_name accepts:
// its first label, lowercased, with every other character made '-',
// at most 63 characters; "localhost" if nothing is left.
func HostLabel(hostname string) string {
	first, _, _ := strings.Cut(hostname, ".")
	b := []byte(strings.ToLower(first))
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			b[i] = '-'
		}
	}
	if len(b) > 63 {
		b = b[:63]
	}
	s := strings.Trim(string(b), "-")
	if s == "" {
		return "localhost"
	}
	return s
}
