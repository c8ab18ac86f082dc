package service

import (
	"context"
	"fmt"
	"maps"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/opus-hosting/opus/internal/config"
	"github.com/opus-hosting/opus/internal/excerpt"
	"github.com/opus-hosting/opus/internal/names"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	opusv1 "github.com/opus-hosting/opus/proto/opus/v1"
	"github.com/opus-hosting/opus/unprivd/store"
)

// Bounds of owner-level settings.
const (
	maxHosts    = 20 // privd accepts 32 aliases; keep room
	maxEnv      = 64
	maxEnvValue = 4096
)

// Settings keys of UpdateSettingsRequest.
const (
	keyDebug     = "debug"
	keyAdmin     = "admin"
	keyHosts     = "hosts"
	keyEnvPrefix = "env."
	// The backend's bounds, admins' alone.
	keyMemory = "memory"
	keyTasks  = "tasks"
	keyCPU    = "cpu"
)

// adminKeys are the settings only an admin may set or unset.
var adminKeys = []string{keyMemory, keyTasks, keyCPU}

// parseBytes reads a size: a number of bytes, or with a K, M, G or T
// suffix (powers of 1024).
func parseBytes(key, v string) (int64, error) {
	mult := int64(1)
	num := v
	if n := len(v); n > 0 {
		switch v[n-1] {
		case 'K', 'k':
			mult = 1 << 10
		case 'M', 'm':
			mult = 1 << 20
		case 'G', 'g':
			mult = 1 << 30
		case 'T', 't':
			mult = 1 << 40
		}
		if mult != 1 {
			num = v[:n-1]
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("%s: %q is not a size such as 512M or 2G", key, excerpt.Short(v))
	}
	return n * mult, nil
}

// notZero refuses a bound of 0, which would read as "no bound" but is
// the host's default in a project's settings: --unset says that.
func notZero(key string, n int64, err error) error {
	if err == nil && n == 0 {
		return fmt.Errorf("%s: 0 is no bound a project may set; --unset %s goes back to the host's default", key, key)
	}
	return err
}

// parseCount reads a whole number setting. A negative one is a number
// all the same: it is left to the bounds' check, which says what is
// allowed (config.BackendLimits.Validate).
func parseCount(key, v string) (int, error) {
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0, fmt.Errorf("%s: %q is not a whole number", key, excerpt.Short(v))
	}
	return n, nil
}

var envNameRE = regexp.MustCompile(`^[A-Z][A-Z0-9_]{0,127}$`)

// validateEnvName says why name may not be an environment variable of an
// app: Python's, the dynamic loader's and Django's own variables would
// change how the project starts.
func validateEnvName(name string) error {
	if !envNameRE.MatchString(name) {
		return fmt.Errorf("environment variable name %q is not allowed; use uppercase letters, digits and underscores, starting with a letter", excerpt.Short(name))
	}
	if strings.HasPrefix(name, "PYTHON") || strings.HasPrefix(name, "LD_") || strings.HasPrefix(name, "DJANGO_") || strings.HasPrefix(name, "MOD_WSGI") || name == "PATH" || name == "HOME" {
		return fmt.Errorf("environment variable %q would change how Python, Django or mod_wsgi starts; it is not allowed", name)
	}
	return nil
}

// validateEnvValue: any text is stored inertly (it only ever passes
// through encoding/json into os.environ), so only what JSON or the
// environment cannot carry is refused.
func validateEnvValue(name, v string) error {
	if len(v) > maxEnvValue {
		return fmt.Errorf("environment variable %s: value is longer than %d bytes", name, maxEnvValue)
	}
	if strings.ContainsRune(v, 0) {
		return fmt.Errorf("environment variable %s: value contains a NUL byte", name)
	}
	if !utf8.ValidString(v) {
		return fmt.Errorf("environment variable %s: value is not valid UTF-8", name)
	}
	return nil
}

// parseBool reads an on/off setting. Only these exact words: a value with
// anything more (spaces, a newline and a directive) is refused.
func parseBool(key, v string) (bool, error) {
	switch v {
	case "true", "on", "yes", "1":
		return true, nil
	case "false", "off", "no", "0":
		return false, nil
	}
	return false, fmt.Errorf("%s: %q is not true or false", key, excerpt.Short(v))
}

// parseHosts reads a comma-separated list of host names (an empty value
// clears the list). serverName is the project's own name, which is not an
// alias of itself; names under the server suffix belong to Opus projects
// and may not be claimed.
func parseHosts(v, serverName, suffix string) ([]string, error) {
	var hosts []string
	if strings.TrimSpace(v) == "" {
		return nil, nil
	}
	for _, h := range strings.Split(v, ",") {
		h = strings.ToLower(strings.Trim(h, " "))
		if err := names.ValidateHostName(h); err != nil {
			return nil, fmt.Errorf("hosts: %v", err)
		}
		if h == serverName {
			return nil, fmt.Errorf("hosts: %q is the project's own name; list only extra names", h)
		}
		if suffix != "" && strings.HasSuffix(h, suffix) {
			return nil, fmt.Errorf("hosts: %q is under %s, where every name belongs to an Opus project", h, suffix)
		}
		if !slices.Contains(hosts, h) {
			hosts = append(hosts, h)
		}
	}
	if len(hosts) > maxHosts {
		return nil, fmt.Errorf("hosts: %d given; at most %d are allowed", len(hosts), maxHosts)
	}
	return hosts, nil
}

// applySettings applies an UpdateSettingsRequest's set and unset to the
// settings of project p (whose server name is serverName). It changes p
// only when everything is valid; errors name the key at fault.
func applySettings(p *store.Project, set map[string]string, unset []string, serverName, suffix string, admin bool) error {
	next := p.Spec.Settings.Clone()
	djangoAdmin := p.Spec.Admin
	if len(set) == 0 && len(unset) == 0 {
		return invalid("set", "nothing to change: give set or unset")
	}
	if !admin {
		for _, k := range adminKeys {
			_, setting := set[k]
			if setting || slices.Contains(unset, k) {
				return status.Errorf(codes.PermissionDenied, "%s: only an admin may change a project's memory, tasks and cpu bounds", k)
			}
		}
	}
	for _, k := range unset {
		if _, ok := set[k]; ok {
			return invalid("unset", "%q is both set and unset", excerpt.Short(k))
		}
		switch {
		case k == keyDebug:
			next.Debug = false
		case k == keyAdmin:
			djangoAdmin = false
		case k == keyHosts:
			next.Hosts = nil
		case k == keyMemory:
			next.MemoryBytes = 0
		case k == keyTasks:
			next.Tasks = 0
		case k == keyCPU:
			next.CPUPercent = 0
		case strings.HasPrefix(k, keyEnvPrefix):
			name := strings.TrimPrefix(k, keyEnvPrefix)
			if err := validateEnvName(name); err != nil {
				return settingInvalid("unset", keyEnvPrefix+"NAME", err)
			}
			delete(next.Env, name)
		default:
			return invalid("unset", "unknown setting %q; settings are debug, admin, hosts, env.NAME, memory, tasks and cpu", excerpt.Short(k))
		}
	}
	// Sorted, so that the first error is the same on every call.
	keys := slices.Sorted(maps.Keys(set))
	for _, k := range keys {
		v := set[k]
		var err error
		switch {
		case k == keyDebug:
			next.Debug, err = parseBool(k, v)
		case k == keyAdmin:
			djangoAdmin, err = parseBool(k, v)
		case k == keyHosts:
			next.Hosts, err = parseHosts(v, serverName, suffix)
		case k == keyMemory:
			next.MemoryBytes, err = parseBytes(k, v)
			err = notZero(k, next.MemoryBytes, err)
		case k == keyTasks:
			next.Tasks, err = parseCount(k, v)
			err = notZero(k, int64(next.Tasks), err)
		case k == keyCPU:
			next.CPUPercent, err = parseCount(k, v)
			err = notZero(k, int64(next.CPUPercent), err)
		case strings.HasPrefix(k, keyEnvPrefix):
			name := strings.TrimPrefix(k, keyEnvPrefix)
			if err = validateEnvName(name); err == nil {
				err = validateEnvValue(name, v)
			}
			if err == nil {
				if next.Env == nil {
					next.Env = map[string]string{}
				}
				next.Env[name] = v
			}
		default:
			err = fmt.Errorf("unknown setting %q; settings are debug, admin, hosts, env.NAME, memory, tasks and cpu", excerpt.Short(k))
		}
		if err != nil {
			return settingInvalid("set", settingField(k), err)
		}
	}
	if len(next.Env) > maxEnv {
		return settingInvalid("set", keyEnvPrefix+"NAME", fmt.Errorf("%d environment variables; at most %d are allowed", len(next.Env), maxEnv))
	}
	if len(next.Env) == 0 {
		next.Env = nil
	}
	if err := (config.BackendLimits{MemoryBytes: next.MemoryBytes, Tasks: next.Tasks, CPUPercent: next.CPUPercent}).Validate(""); err != nil {
		return invalid("set", "%v", err)
	}
	p.Spec.Settings, p.Spec.Admin = next, djangoAdmin
	return nil
}

// settingField is the detail field of a refused setting k: the key
// itself for a known one; env.NAME for any environment variable (the
// variable's name is the caller's text: it stays in the message only).
func settingField(k string) string {
	switch {
	case strings.HasPrefix(k, keyEnvPrefix):
		return keyEnvPrefix + "NAME"
	case slices.Contains([]string{keyDebug, keyAdmin, keyHosts, keyMemory, keyTasks, keyCPU}, k):
		return k
	}
	return ""
}

// settingsFromProto validates the initial settings of a CreateProject.
func settingsFromProto(s *opusv1.Settings, serverName, suffix string) (store.Settings, error) {
	var out store.Settings
	if s == nil {
		return out, nil
	}
	out.Debug = s.GetDebug()
	if s.GetMemoryBytes() != 0 || s.GetTasks() != 0 || s.GetCpuPercent() != 0 {
		return out, invalid("settings", "memory, tasks and cpu are not set at create; an admin sets them afterwards (opusctl set NAME memory=512M)")
	}
	if len(s.GetHosts()) > 0 {
		hosts, err := parseHosts(strings.Join(s.GetHosts(), ","), serverName, suffix)
		if err != nil {
			return out, invalid("settings", "%v", err)
		}
		out.Hosts = hosts
	}
	if len(s.GetEnv()) > maxEnv {
		return out, invalid("settings.env", "%d environment variables; at most %d are allowed", len(s.GetEnv()), maxEnv)
	}
	for k, v := range s.GetEnv() {
		if err := validateEnvName(k); err != nil {
			return out, invalid("settings.env", "%v", err)
		}
		if err := validateEnvValue(k, v); err != nil {
			return out, invalid("settings.env", "%v", err)
		}
		if out.Env == nil {
			out.Env = map[string]string{}
		}
		out.Env[k] = v
	}
	return out, nil
}

// toSettings renders settings for the API.
func toSettings(p *store.Project) *opusv1.Settings {
	s := p.Spec.Settings
	return &opusv1.Settings{Debug: s.Debug, Admin: p.Spec.Admin, Hosts: slices.Clone(s.Hosts), Env: maps.Clone(s.Env),
		MemoryBytes: uint64(s.MemoryBytes), Tasks: uint32(s.Tasks), CpuPercent: uint32(s.CPUPercent)}
}

// hostsTaken returns an error when another project already serves one of
// hosts as an alias: Apache would answer for the name with whichever
// vhost comes first, so a name is one project's only.
func hostsTaken(tx *store.Tx, project string, hosts []string) error {
	if len(hosts) == 0 {
		return nil
	}
	ps, err := tx.Projects()
	if err != nil {
		return err
	}
	for _, other := range ps {
		if other.Name == project {
			continue
		}
		for _, h := range hosts {
			if slices.Contains(other.Spec.Settings.Hosts, h) {
				return status.Errorf(codes.AlreadyExists, "hosts: %q is already a host name of another project", h)
			}
		}
	}
	return nil
}

// UpdateSettings changes owner-level settings and applies them. Values
// are checked here and reach the host only as data (see store.Settings).
func (s *Service) UpdateSettings(ctx context.Context, req *opusv1.UpdateSettingsRequest) (*opusv1.Operation, error) {
	if err := validateProject("project", req.GetProject()); err != nil {
		return nil, err
	}
	if n := len(req.GetSet()) + len(req.GetUnset()); n > 2*maxEnv {
		return nil, invalid("set", "%d changes in one call; at most %d are allowed", n, 2*maxEnv)
	}
	server := req.GetProject() + s.cfg.ServerSuffix
	// Validate before taking the store's write lock; applied again on the
	// stored record inside the transaction.
	c, err := callerFrom(ctx)
	if err != nil {
		return nil, err
	}
	probe := &store.Project{Name: req.GetProject()}
	if err := applySettings(probe, req.GetSet(), req.GetUnset(), server, s.cfg.ServerSuffix, c.admin); err != nil {
		return nil, err
	}
	return s.mutateTx(ctx, opusv1.Opus_UpdateSettings_FullMethodName, req.GetProject(), store.OpUpdateSettings, func(tx *store.Tx, c caller, p *store.Project) error {
		before, beforeAdmin := p.Spec.Settings.Clone(), p.Spec.Admin
		if err := applySettings(p, req.GetSet(), req.GetUnset(), server, s.cfg.ServerSuffix, c.admin); err != nil {
			return err
		}
		// Asking again for what is deployed restarts nothing. A project
		// not (yet) at its spec still gets an operation: that is a retry.
		if deployed(p) && sameSettings(before, p.Spec.Settings) && beforeAdmin == p.Spec.Admin {
			return errUnchanged
		}
		return hostsTaken(tx, p.Name, p.Spec.Settings.Hosts)
	})
}

// sameSettings says a and b ask for the same thing (an empty list or map
// is no list or map). Every field counts, also one added later.
func sameSettings(a, b store.Settings) bool {
	for _, s := range []*store.Settings{&a, &b} {
		if len(s.Hosts) == 0 {
			s.Hosts = nil
		}
		if len(s.Env) == 0 {
			s.Env = nil
		}
	}
	return reflect.DeepEqual(a, b)
}
