// Package django renders the Django project skeleton of an Opus project —
// manage.py, wsgi.py and the opus_project package — without running
// django-admin, for Django 3.2 through 5.x. The Python files are fixed bytes
// (see skeleton.go); the variable parts are written as JSON to
// opus_project/opus.json and the project's secrets/secrets.json (see
// SecretsJSON), which settings.py reads. Because values only ever pass
// through encoding/json, no app name, host or environment value can inject
// Python.
package django

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/opus-hosting/opus/internal/atomicfile"
	"github.com/opus-hosting/opus/internal/layout"
	"github.com/opus-hosting/opus/internal/names"
)

// Modes of what Render writes; privd applies ownership and the final
// policy later.
const (
	fileMode fs.FileMode = 0o640
	dirMode  fs.FileMode = 0o750
)

// Database engines.
const (
	EngineSQLite     = "sqlite"
	EnginePostgreSQL = "postgresql"
)

// Config is the variable part of a project's settings.
type Config struct {
	// Project is the project name.
	Project string
	// AllowedHosts become ALLOWED_HOSTS (host names, no scheme or port).
	AllowedHosts []string
	// Origins become CSRF_TRUSTED_ORIGINS, as scheme://host[:port]
	// (settings.py strips the scheme on Django 3.2).
	Origins []string
	// Apps are the project's apps in INSTALLED_APPS order.
	Apps []App
	// Admin mounts Django's admin at /admin/.
	Admin bool
	// Debug turns on Django's DEBUG.
	Debug bool
	// Database is the default database; a zero value means SQLite in the
	// project's data directory.
	Database Database
	// Env are environment variables settings.py sets with
	// os.environ.setdefault (never overriding the real environment). Keys
	// match ^[A-Z][A-Z0-9_]*$; Python's and the loader's own variables are
	// refused.
	Env map[string]string
}

// App is one app of a project.
type App struct {
	// Name is the app's package name (see names.ValidateAppName).
	Name string
	// URLs says the app has a urls.py to mount at /<Name>/.
	URLs bool
}

// Database is the default database. The password lives in Secrets.
type Database struct {
	// Engine is EngineSQLite (or "") or EnginePostgreSQL.
	Engine string
	// Name, User, Host and Port are PostgreSQL's connection settings.
	Name, User, Host string
	Port             int
}

// Secrets are the values only the project may read.
type Secrets struct {
	SecretKey  string
	DBPassword string
}

// StaticURL is where Apache serves the project's collected static files.
const StaticURL = "/static/"

var envKey = regexp.MustCompile(`^[A-Z][A-Z0-9_]*$`)

// Validate says what is wrong with c, or returns nil.
func (c Config) Validate() error {
	if err := names.ValidateProject(c.Project); err != nil {
		return err
	}
	seen := map[string]bool{}
	for _, a := range c.Apps {
		if err := names.ValidateAppName(a.Name); err != nil {
			return err
		}
		if seen[a.Name] {
			return fmt.Errorf("app %q is listed twice", a.Name)
		}
		seen[a.Name] = true
	}
	for _, h := range c.AllowedHosts {
		if h == "" || strings.ContainsAny(h, "/ \t\r\n\x00") {
			return fmt.Errorf("allowed host %q is not a host name", h)
		}
	}
	for _, o := range c.Origins {
		if !(strings.HasPrefix(o, "http://") || strings.HasPrefix(o, "https://")) || strings.ContainsAny(o, " \t\r\n\x00") {
			return fmt.Errorf("origin %q must be http://host[:port] or https://host[:port]", o)
		}
	}
	switch c.Database.Engine {
	case "", EngineSQLite:
	case EnginePostgreSQL:
		if c.Database.Name == "" {
			return errors.New("postgresql database needs a name")
		}
	default:
		return fmt.Errorf("database engine %q is not supported; use %q or %q", c.Database.Engine, EngineSQLite, EnginePostgreSQL)
	}
	if c.Database.Port < 0 || c.Database.Port > 65535 {
		return fmt.Errorf("database port %d is out of range", c.Database.Port)
	}
	for k, v := range c.Env {
		if !envKey.MatchString(k) {
			return fmt.Errorf("environment variable name %q is not allowed; use uppercase letters, digits and underscores, starting with a letter", k)
		}
		if strings.HasPrefix(k, "PYTHON") || strings.HasPrefix(k, "LD_") || strings.HasPrefix(k, "DJANGO_") || k == "PATH" {
			return fmt.Errorf("environment variable %q would change how Python or Django starts; it is not allowed", k)
		}
		if strings.ContainsRune(v, 0) {
			return fmt.Errorf("environment variable %q contains a NUL byte", k)
		}
	}
	return nil
}

// opusJSON is the shape settings.py reads.
type opusJSON struct {
	Project       string            `json:"project"`
	InstalledApps []string          `json:"installed_apps"`
	URLApps       []string          `json:"url_apps"`
	AllowedHosts  []string          `json:"allowed_hosts"`
	Origins       []string          `json:"csrf_trusted_origins"`
	Debug         bool              `json:"debug"`
	Admin         bool              `json:"admin"`
	Database      dbJSON            `json:"database"`
	StaticURL     string            `json:"static_url"`
	Env           map[string]string `json:"env"`
}

type dbJSON struct {
	Engine string `json:"engine"`
	Name   string `json:"name,omitempty"`
	User   string `json:"user,omitempty"`
	Host   string `json:"host,omitempty"`
	Port   int    `json:"port,omitempty"`
}

// files returns every rendered file by path relative to the code
// directory. It does not validate c.
func files(c Config) (map[string][]byte, error) {
	j := opusJSON{
		Project:       c.Project,
		InstalledApps: []string{},
		URLApps:       []string{},
		AllowedHosts:  append([]string{}, c.AllowedHosts...),
		Origins:       append([]string{}, c.Origins...),
		Debug:         c.Debug,
		Admin:         c.Admin,
		Database:      dbJSON{Engine: EngineSQLite},
		StaticURL:     StaticURL,
		Env:           map[string]string{},
	}
	for _, a := range c.Apps {
		j.InstalledApps = append(j.InstalledApps, a.Name)
		if a.URLs {
			j.URLApps = append(j.URLApps, a.Name)
		}
	}
	if c.Database.Engine == EnginePostgreSQL {
		j.Database = dbJSON{Engine: EnginePostgreSQL, Name: c.Database.Name, User: c.Database.User, Host: c.Database.Host, Port: c.Database.Port}
	}
	for k, v := range c.Env {
		j.Env[k] = v
	}
	data, err := json.MarshalIndent(j, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("render opus.json: %w", err)
	}
	pkg := layout.PackageName
	return map[string][]byte{
		layout.ManagePy:                   []byte(managePy),
		layout.WSGIScript:                 []byte(wsgiPy),
		filepath.Join(pkg, "__init__.py"): []byte(initPy),
		filepath.Join(pkg, "settings.py"): []byte(settingsPy),
		filepath.Join(pkg, "urls.py"):     []byte(urlsPy),
		filepath.Join(pkg, "opus.json"):   append(data, '\n'),
	}, nil
}

// Render writes the project skeleton into codeDir (created if missing) and
// reports whether any file changed. Files whose content is already right
// are not touched (so their mtimes, which mod_wsgi watches, stay put); the
// others are replaced atomically.
func Render(codeDir string, cfg Config) (changed bool, err error) {
	if err := cfg.Validate(); err != nil {
		return false, fmt.Errorf("render %s: %w", cfg.Project, err)
	}
	rendered, err := files(cfg)
	if err != nil {
		return false, err
	}
	if err := os.MkdirAll(filepath.Join(codeDir, layout.PackageName), dirMode); err != nil {
		return false, fmt.Errorf("render %s: %w", cfg.Project, err)
	}
	for _, name := range sortedKeys(rendered) {
		c, err := atomicfile.WriteIfChanged(filepath.Join(codeDir, name), rendered[name], fileMode)
		if err != nil {
			return changed, fmt.Errorf("render %s: %w", cfg.Project, err)
		}
		changed = changed || c
	}
	return changed, nil
}

// SecretsFile is the name of the secrets file in the secrets directory.
const SecretsFile = "secrets.json"

// SecretsJSON is the content of the secrets file for s: what settings.py
// reads. The file lives in a directory the project's user can write, so
// opusd writes it (see package tenantdir) and never takes it back as the
// truth: the values come from opusd's store.
func SecretsJSON(s Secrets) ([]byte, error) {
	if s.SecretKey == "" {
		return nil, errors.New("secrets: the secret key is empty")
	}
	data, err := json.MarshalIndent(map[string]string{"secret_key": s.SecretKey, "db_password": s.DBPassword}, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("secrets: %w", err)
	}
	return append(data, '\n'), nil
}

// ParseSecrets reads the content of a secrets file as SecretsJSON makes it.
// Its only use is taking over the secret key of a project made before
// opusd kept the key itself; the caller reads data safely and bounded.
func ParseSecrets(data []byte) (Secrets, error) {
	var m map[string]string
	if err := json.Unmarshal(data, &m); err != nil {
		return Secrets{}, fmt.Errorf("secrets: %w", err)
	}
	if m["secret_key"] == "" {
		return Secrets{}, errors.New("secrets: the secret key is empty")
	}
	return Secrets{SecretKey: m["secret_key"], DBPassword: m["db_password"]}, nil
}

// secretKeyChars is the alphabet of Django's get_random_secret_key.
const secretKeyChars = "abcdefghijklmnopqrstuvwxyz0123456789!@#$%^&*(-_=+)"

// NewSecretKey returns a new 50-character Django SECRET_KEY from
// crypto/rand.
func NewSecretKey() (string, error) {
	b := make([]byte, 50)
	max := big.NewInt(int64(len(secretKeyChars)))
	for i := range b {
		n, err := rand.Int(rand.Reader, max)
		if err != nil {
			return "", fmt.Errorf("secret key: %w", err)
		}
		b[i] = secretKeyChars[n.Int64()]
	}
	return string(b), nil
}

func sortedKeys(m map[string][]byte) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	// Write opus.json last, so the code is complete before the data that
	// refers to it changes.
	sort.Slice(keys, func(i, j int) bool {
		ji, jj := strings.HasSuffix(keys[i], ".json"), strings.HasSuffix(keys[j], ".json")
		if ji != jj {
			return jj
		}
		return keys[i] < keys[j]
	})
	return keys
}
