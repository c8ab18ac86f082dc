package names

import (
	"fmt"
	"strings"

	"github.com/opus-hosting/opus/internal/excerpt"
	"github.com/opus-hosting/opus/internal/layout"
)

// MaxAppName is the longest app name.
const MaxAppName = 64

// reservedApps are names an app may not take because the app's package would
// shadow a module Django, the rendered project or the standard library
// needs (the code directory comes first on sys.path).
var reservedApps = map[string]bool{
	// Django and the rendered project.
	"django": true, layout.PackageName: true, "manage": true, "wsgi": true,
	"settings": true, "urls": true, "opus": true, "asgiref": true,
	"sqlparse": true, "pytz": true, "psycopg2": true, "psycopg": true,
	"mod_wsgi": true, "static": true, "media": true, "test": true,
	"tests": true, "admin": true,
	// Common standard library modules.
	"abc": true, "argparse": true, "array": true, "ast": true,
	"asyncio": true, "base64": true, "binascii": true, "bisect": true,
	"builtins": true, "calendar": true, "cgi": true, "cmd": true,
	"code": true, "codecs": true, "collections": true, "contextlib": true,
	"contextvars": true, "copy": true, "copyreg": true, "csv": true,
	"ctypes": true, "dataclasses": true, "datetime": true, "decimal": true,
	"difflib": true, "dis": true, "email": true, "encodings": true,
	"enum": true, "errno": true, "fnmatch": true, "fractions": true,
	"functools": true, "gc": true, "getpass": true, "gettext": true,
	"glob": true, "gzip": true, "hashlib": true, "heapq": true,
	"hmac": true, "html": true, "http": true, "importlib": true,
	"inspect": true, "io": true, "ipaddress": true, "itertools": true,
	"json": true, "keyword": true, "locale": true, "logging": true,
	"math": true, "mimetypes": true, "numbers": true, "operator": true,
	"os": true, "pathlib": true, "pickle": true, "pkgutil": true,
	"platform": true, "posix": true, "pprint": true, "queue": true,
	"random": true, "re": true, "secrets": true, "select": true,
	"selectors": true, "shlex": true, "shutil": true, "signal": true,
	"site": true, "socket": true, "sqlite3": true, "ssl": true,
	"stat": true, "statistics": true, "string": true, "struct": true,
	"subprocess": true, "sys": true, "sysconfig": true, "tempfile": true,
	"textwrap": true, "threading": true, "time": true, "timeit": true,
	"token": true, "tokenize": true, "traceback": true, "types": true,
	"typing": true, "unicodedata": true, "unittest": true, "urllib": true,
	"uuid": true, "warnings": true, "weakref": true, "wsgiref": true,
	"xml": true, "zipfile": true, "zlib": true, "zoneinfo": true,
}

// ValidateAppName says why name cannot be an app name, or returns nil. An
// app name is a lowercase Python identifier (^[a-z_][a-z0-9_]*$, at most
// MaxAppName characters) that is not a keyword and does not shadow a module
// the project needs.
func ValidateAppName(name string) error {
	const allowed = "lowercase letters a-z, digits 0-9 and underscores, starting with a letter or underscore"
	if err := checkLength("app name", name, MaxAppName, allowed); err != nil {
		return err
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z', c == '_':
		case c >= '0' && c <= '9':
			if i == 0 {
				return fmt.Errorf("app name %q starts with a digit; use %s", name, allowed)
			}
		case c >= 'A' && c <= 'Z':
			return fmt.Errorf("app name %q contains the uppercase letter %q; use %s", name, rune(c), allowed)
		default:
			return fmt.Errorf("app name %q contains %q; use %s", excerpt.Short(name), rune(c), allowed)
		}
	}
	if IsPythonKeyword(name) {
		return fmt.Errorf("app name %q is a Python keyword; choose another name", name)
	}
	if strings.HasPrefix(name, "__") {
		return fmt.Errorf("app name %q starts with two underscores, which Python reserves; choose another name", name)
	}
	if reservedApps[name] {
		return fmt.Errorf("app name %q would shadow the Python module of the same name that Django or the project needs; choose another name", name)
	}
	return nil
}
