// Package layout is the on-disk shape of a project, the one thing about paths
// both daemons must agree on. opusd writes into a project's tree; opus-privd
// derives the same paths from its own configured base directory and a
// validated project name (it never receives a path).
//
//	BASE/projects/NAME/          root      opus:NAME     0751
//	BASE/projects/NAME/code/     code      opus:NAME     0751 (files 0640; subdirs 0750)
//	BASE/projects/NAME/code/wsgi.py        the WSGI script Apache maps to
//	BASE/projects/NAME/secrets/  secrets   NAME:opus     0770 (files 0640)
//	BASE/projects/NAME/data/     data      NAME:opus     0770 (files 0660)
//	BASE/projects/NAME/data/media/         MEDIA_ROOT (the app's own files)
//	BASE/projects/NAME/static/   static    opus:NAME     0775 (files 0644)
package layout

import "path/filepath"

// Names of the directories of a project root.
const (
	CodeDir    = "code"
	SecretsDir = "secrets"
	DataDir    = "data"
	StaticDir  = "static"
)

// Files both sides name.
const (
	// WSGIScript is the WSGI entry point, relative to the code directory.
	WSGIScript = "wsgi.py"
	// ManagePy is Django's manage.py, relative to the code directory.
	ManagePy = "manage.py"
	// PackageName is the Python package of the rendered Django project.
	PackageName = "opus_project"
	// SQLiteFile is the project's SQLite database, in the data directory
	// (the rendered settings name it too).
	SQLiteFile = "db.sqlite3"
	// MediaDir is Django's MEDIA_ROOT, in the data directory (the
	// rendered settings name it too): what the app stores of its users'
	// uploads. Tenant-written, like all of data.
	MediaDir = "media"
)

// SnapshotsDir is opusd's own directory of data snapshots under the base
// directory: one directory per project, which no tenant can write.
const SnapshotsDir = "snapshots"

// Project is the set of paths of one project under a base directory.
type Project struct {
	Root, Code, Secrets, Data, Static string
}

// ProjectsDir is the directory holding every project root.
func ProjectsDir(base string) string { return filepath.Join(base, "projects") }

// For returns the paths of project name under base. The caller must have
// validated name (see package names).
func For(base, name string) Project {
	root := filepath.Join(ProjectsDir(base), name)
	return Project{
		Root:    root,
		Code:    filepath.Join(root, CodeDir),
		Secrets: filepath.Join(root, SecretsDir),
		Data:    filepath.Join(root, DataDir),
		Static:  filepath.Join(root, StaticDir),
	}
}

// WSGI returns the path of the project's WSGI script.
func (p Project) WSGI() string { return filepath.Join(p.Code, WSGIScript) }

// SQLite returns the path of the project's SQLite database.
func (p Project) SQLite() string { return filepath.Join(p.Data, SQLiteFile) }

// Media returns the path of the project's media directory.
func (p Project) Media() string { return filepath.Join(p.Data, MediaDir) }

// Manage returns the path of the project's manage.py.
func (p Project) Manage() string { return filepath.Join(p.Code, ManagePy) }

// The directories of privd's apache_dir that opusd reads too (doctor
// compares them with its store): one vhost NAME.conf per project in
// Sites, one directory NAME/ per project's backend in Backends.
func Sites(apacheDir string) string { return filepath.Join(apacheDir, "sites") }

// Backends: see Sites.
func Backends(apacheDir string) string { return filepath.Join(apacheDir, "backends") }
