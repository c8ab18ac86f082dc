// Package backup is the file format of a project's backup (opusctl backup /
// restore) and its validation.
//
// A backup is one gzipped tar, written by opusd as it streams to the client
// (opusctl writes it with the caller's rights; opusd never writes a
// caller's path), holding, in this order:
//
//	manifest.json     format and version, the Opus that wrote it, the project
//	                  as the API's CreateProjectRequest (apps at the revisions
//	                  that ran: a git URL and commit, or an upload digest), and
//	                  the size and SHA-256 of every other part
//	secrets.json      SECRET_KEY, and the password of a database given by its
//	                  connection parameters
//	database.sqlite3  a consistent copy of the SQLite database (privd's
//	or database.pgdump DumpData), or pg_dump's custom format
//	media.tar         the media files (data/media), regular files and
//	                  directories only
//	apps/APP.tar[.gz] the archive of each uploaded app, as it was uploaded
//
// It carries no uid, gid or path of the host it came from: a restore on
// another host makes the project anew, owned by whoever restores it.
//
// A backup file is attacker input to opusd (anyone may hand one to
// RestoreProject): Read checks the whole of it, within bounds, before a
// restore changes anything: one plain file per known name, each within its
// bound, every part listed in the manifest with its size and digest, and
// nothing else. Names and settings inside the project are then checked by
// the API's own code, as for CreateProject.
package backup

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/opus-hosting/opus/internal/excerpt"
	"github.com/opus-hosting/opus/internal/names"
	opusv1 "github.com/opus-hosting/opus/proto/opus/v1"
)

// Format and Version identify the file; a reader refuses any other.
const (
	Format  = "opus-backup"
	Version = 1
)

// Names of the parts.
const (
	ManifestFile = "manifest.json"
	SecretsFile  = "secrets.json"
	SQLiteFile   = "database.sqlite3"
	PGDumpFile   = "database.pgdump"
	MediaFile    = "media.tar"
	appsDir      = "apps/"
)

// Bounds of the small parts.
const (
	MaxManifest = 1 << 20
	MaxSecrets  = 64 << 10
	// MaxApps bounds the apps of one backup.
	MaxApps = 64
)

// AppFile is the name of app's upload archive in a backup (gz says it is
// gzipped, as uploaded).
func AppFile(app string, gz bool) string {
	if gz {
		return appsDir + app + ".tar.gz"
	}
	return appsDir + app + ".tar"
}

// Manifest describes a backup. Its Project is the API's CreateProjectRequest
// as protojson, so a restore reads it with the API's own checks.
type Manifest struct {
	Format      string          `json:"format"`
	Version     int             `json:"version"`
	OpusVersion string          `json:"opus_version,omitempty"`
	Created     time.Time       `json:"created"`
	Project     json.RawMessage `json:"project"`
	// Parts are every file of the backup after the manifest.
	Parts []Part `json:"parts"`
}

// Part is one file of a backup.
type Part struct {
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// Secrets are a project's secrets, as a backup holds them.
type Secrets struct {
	SecretKey        string `json:"secret_key"`
	DatabasePassword string `json:"database_password,omitempty"`
}

// maxSecretKey bounds SECRET_KEY (Opus makes 50 characters).
const maxSecretKey = 1024

// Limits bound what Read accepts.
type Limits struct {
	// Data bounds the database copy and the media tar each (opusd's
	// snapshot_max_bytes: the most privd loads).
	Data int64
	// App bounds each app archive (the upload limit), and Apps all of
	// them together (the upload quota: they become the restorer's
	// uploads); 0 means App.
	App, Apps int64
}

func (l Limits) apps() int64 {
	if l.Apps <= 0 {
		return l.App
	}
	return l.Apps
}

// Total is the most a backup within l can take, uncompressed.
func (l Limits) Total() int64 {
	return MaxManifest + MaxSecrets + 2*l.Data + l.apps() + (MaxApps+4)*4096
}

// ErrInvalid wraps every refusal of a backup file.
var ErrInvalid = errors.New("not a valid Opus backup")

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// errCutShort refuses a file that ends early (in part, when known): a
// copy or transfer that did not finish.
func errCutShort(part string) error {
	if part != "" {
		return invalid("the file is cut short (it ends inside %s): a copy or transfer of it did not finish", part)
	}
	return invalid("the file is cut short: a copy or transfer of it did not finish")
}

// Archive is a backup that passed Read: its manifest, project and secrets
// in memory, its other parts in a private temporary directory until Close.
type Archive struct {
	Manifest Manifest
	Project  *opusv1.CreateProjectRequest
	Secrets  Secrets
	dir      string
	parts    map[string]Part
}

// Has reports whether the backup has part name.
func (a *Archive) Has(name string) bool { _, ok := a.parts[name]; return ok }

// Open opens part name (one of the manifest's).
func (a *Archive) Open(name string) (*os.File, error) {
	if !a.Has(name) || name == ManifestFile || name == SecretsFile {
		return nil, fmt.Errorf("the backup has no %s", name)
	}
	return os.Open(filepath.Join(a.dir, partPath(name)))
}

// Size is part name's size.
func (a *Archive) Size(name string) int64 { return a.parts[name].Size }

// Close removes the parts' copies.
func (a *Archive) Close() error { return os.RemoveAll(a.dir) }

// partPath is where part name is kept in the temporary directory.
func partPath(name string) string { return strings.ReplaceAll(name, "/", "_") }

// partKind says whether name may be in a backup, and its bound.
func partBound(name string, l Limits) (int64, bool) {
	switch name {
	case ManifestFile:
		return MaxManifest, true
	case SecretsFile:
		return MaxSecrets, true
	case SQLiteFile, PGDumpFile, MediaFile:
		return l.Data, true
	}
	app, ok := strings.CutPrefix(name, appsDir)
	if !ok {
		return 0, false
	}
	app, ok = strings.CutSuffix(app, ".tar.gz")
	if !ok {
		app, ok = strings.CutSuffix(app, ".tar")
	}
	if !ok || names.ValidateAppName(app) != nil {
		return 0, false
	}
	return l.App, true
}

// Read reads and checks a whole backup from r (at most l.Total() bytes,
// compressed or not), keeping its large parts in a new directory under
// tmp. Any fault is an error wrapping ErrInvalid, and nothing is kept.
func Read(r io.Reader, tmp string, l Limits) (_ *Archive, err error) {
	dir, err := os.MkdirTemp(tmp, "restore-*")
	if err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	defer func() {
		if err != nil {
			os.RemoveAll(dir)
		}
	}()
	total := l.Total()
	counted := &countReader{r: r, max: total}
	// A byte reader of our own, so gzip reads no further than its end
	// and what follows can be seen.
	br := bufio.NewReader(counted)
	gz, err := gzip.NewReader(br)
	if err != nil {
		return nil, invalid("not gzip: %v", err)
	}
	gz.Multistream(false)
	tr := tar.NewReader(&countReader{r: gz, max: total})
	a := &Archive{dir: dir, parts: map[string]Part{}}
	var manifest, secrets []byte
	seen := map[string]Part{}
	var order []string
	var appBytes int64
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			if counted.over {
				return nil, invalid("larger than %d bytes", total)
			}
			if errors.Is(err, io.ErrUnexpectedEOF) {
				return nil, errCutShort("")
			}
			return nil, invalid("tar: %v", err)
		}
		name := h.Name
		bound, ok := partBound(name, l)
		if !ok {
			return nil, invalid("unexpected file %q", clip(name))
		}
		if h.Typeflag != tar.TypeReg {
			return nil, invalid("%s is not a regular file", name)
		}
		if _, dup := seen[name]; dup {
			return nil, invalid("%s is there twice", name)
		}
		if len(order) == 0 && name != ManifestFile {
			return nil, invalid("the first file is %s, not %s", name, ManifestFile)
		}
		if h.Size < 0 || h.Size > bound {
			return nil, invalid("%s is %d bytes, more than the %d this host accepts", name, h.Size, bound)
		}
		if strings.HasPrefix(name, appsDir) {
			if appBytes += h.Size; appBytes > l.apps() {
				return nil, invalid("the apps' archives are more than %d bytes together, the upload quota of this host", l.apps())
			}
		}
		hash := sha256.New()
		var n int64
		switch name {
		case ManifestFile, SecretsFile:
			var buf bytes.Buffer
			n, err = io.Copy(io.MultiWriter(&buf, hash), io.LimitReader(tr, bound+1))
			if name == ManifestFile {
				manifest = buf.Bytes()
			} else {
				secrets = buf.Bytes()
			}
		default:
			var f *os.File
			f, err = os.OpenFile(filepath.Join(dir, partPath(name)), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
			if err != nil {
				return nil, fmt.Errorf("restore: %w", err)
			}
			n, err = io.Copy(io.MultiWriter(f, hash), io.LimitReader(tr, bound+1))
			if cerr := f.Close(); err == nil {
				err = cerr
			}
		}
		if err != nil {
			if counted.over {
				return nil, invalid("larger than %d bytes", total)
			}
			if errors.Is(err, io.ErrUnexpectedEOF) {
				return nil, errCutShort(name)
			}
			return nil, invalid("%s: %v", name, err)
		}
		if n != h.Size {
			return nil, invalid("%s is cut short", name)
		}
		seen[name] = Part{Name: name, Size: n, SHA256: hex.EncodeToString(hash.Sum(nil))}
		order = append(order, name)
	}
	// Nothing may follow the tar (a second gzip member, garbage), and
	// the gzip stream must end whole: its trailer (CRC and size) is read
	// only here.
	n, err := io.Copy(io.Discard, io.LimitReader(gz, 1<<20))
	switch {
	case n > 0:
		return nil, invalid("data after the end of the archive")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return nil, errCutShort("")
	case err != nil:
		return nil, invalid("gzip: %v", err)
	}
	if _, err := br.ReadByte(); !errors.Is(err, io.EOF) {
		return nil, invalid("data after the end of the archive")
	}
	if manifest == nil {
		return nil, invalid("no %s", ManifestFile)
	}
	if err := a.parseManifest(manifest, seen); err != nil {
		return nil, err
	}
	if secrets != nil {
		if err := a.parseSecrets(secrets); err != nil {
			return nil, err
		}
	}
	return a, nil
}

// parseManifest checks the manifest against the files found.
func (a *Archive) parseManifest(data []byte, seen map[string]Part) error {
	m, err := ParseManifest(data)
	if err != nil {
		return err
	}
	listed := map[string]bool{}
	for _, p := range m.Parts {
		got, ok := seen[p.Name]
		switch {
		case listed[p.Name]:
			return invalid("the manifest lists %q twice", clip(p.Name))
		case !ok:
			return invalid("the manifest lists %q, which is not in the file", clip(p.Name))
		case got.Size != p.Size || got.SHA256 != p.SHA256:
			return invalid("%s is damaged: its size or SHA-256 is not the one the manifest records", p.Name)
		}
		listed[p.Name] = true
		a.parts[p.Name] = got
	}
	for name := range seen {
		if name != ManifestFile && !listed[name] {
			return invalid("%s is not listed in the manifest", name)
		}
	}
	if a.Has(SQLiteFile) && a.Has(PGDumpFile) {
		return invalid("it holds two databases")
	}
	a.Manifest = *m
	a.Project = &opusv1.CreateProjectRequest{}
	if err := (protojson.UnmarshalOptions{}).Unmarshal(m.Project, a.Project); err != nil {
		return invalid("project: %v", err)
	}
	return a.checkProject()
}

// ParseManifest parses and checks a manifest on its own: format, version,
// part names. (Fuzzed: it is the first thing read of a hostile file.)
func ParseManifest(data []byte) (*Manifest, error) {
	if len(data) > MaxManifest {
		return nil, invalid("%s is larger than %d bytes", ManifestFile, MaxManifest)
	}
	var m Manifest
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return nil, invalid("%s: %v", ManifestFile, err)
	}
	if dec.More() {
		return nil, invalid("%s: more than one JSON value", ManifestFile)
	}
	if m.Format != Format {
		return nil, invalid("format %q is not %q", clip(m.Format), Format)
	}
	if m.Version != Version {
		return nil, invalid("format version %d; this Opus reads version %d (restore it with the Opus that wrote it, %s)", m.Version, Version, clip(m.OpusVersion))
	}
	if len(m.Project) == 0 {
		return nil, invalid("%s has no project", ManifestFile)
	}
	if len(m.Parts) > MaxApps+4 {
		return nil, invalid("%s lists %d parts", ManifestFile, len(m.Parts))
	}
	for _, p := range m.Parts {
		if _, ok := partBound(p.Name, Limits{}); !ok || p.Name == ManifestFile {
			return nil, invalid("%s lists %q, which is not a part of a backup", ManifestFile, clip(p.Name))
		}
		if p.Size < 0 || len(p.SHA256) != 64 {
			return nil, invalid("%s: part %s has no valid size and SHA-256", ManifestFile, p.Name)
		}
	}
	return &m, nil
}

// checkProject checks what the format itself requires of the project (the
// API's checks come after, in the service): a valid name, at most MaxApps
// apps, an archive in the file for every uploaded app and no other.
func (a *Archive) checkProject() error {
	p := a.Project
	if err := names.ValidateProject(p.GetName()); err != nil {
		return invalid("project name: %v", err)
	}
	if len(p.GetApps()) > MaxApps {
		return invalid("%d apps, more than %d", len(p.GetApps()), MaxApps)
	}
	want := map[string]bool{}
	for _, app := range p.GetApps() {
		if err := names.ValidateAppName(app.GetName()); err != nil {
			return invalid("app %q: %v", clip(app.GetName()), err)
		}
		if app.GetSource().GetUpload() != nil {
			switch {
			case a.Has(AppFile(app.GetName(), true)):
				want[AppFile(app.GetName(), true)] = true
			case a.Has(AppFile(app.GetName(), false)):
				want[AppFile(app.GetName(), false)] = true
			default:
				return invalid("app %s is an upload but its archive is not in the file", app.GetName())
			}
		}
	}
	for name := range a.parts {
		if strings.HasPrefix(name, appsDir) && !want[name] {
			return invalid("%s is the archive of no uploaded app", name)
		}
	}
	return nil
}

// AppArchive is the part holding uploaded app's archive.
func (a *Archive) AppArchive(app string) string {
	if a.Has(AppFile(app, true)) {
		return AppFile(app, true)
	}
	return AppFile(app, false)
}

func (a *Archive) parseSecrets(data []byte) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&a.Secrets); err != nil {
		return invalid("%s: %v", SecretsFile, err)
	}
	if len(a.Secrets.SecretKey) > maxSecretKey || strings.ContainsAny(a.Secrets.SecretKey, "\x00\n") {
		return invalid("%s: the secret key is longer than %d characters or holds a NUL or line break", SecretsFile, maxSecretKey)
	}
	return nil
}

// clip is a name from the file for a message: short, and printable.
func clip(s string) string { return excerpt.Short(s) }

// countReader fails past max bytes.
type countReader struct {
	r    io.Reader
	n    int64
	max  int64
	over bool
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if c.n > c.max {
		c.over = true
		return n, fmt.Errorf("more than %d bytes", c.max)
	}
	return n, err
}

// Writer writes a backup: New, then the parts, then Close.
type Writer struct {
	m     Manifest
	parts []source
}

type source struct {
	name string
	f    *os.File
	size int64
	sum  string
}

// NewWriter starts a backup of project (the API request that remakes it).
func NewWriter(project *opusv1.CreateProjectRequest, opusVersion string, now time.Time) (*Writer, error) {
	js, err := protojson.Marshal(project)
	if err != nil {
		return nil, err
	}
	return &Writer{m: Manifest{Format: Format, Version: Version, OpusVersion: opusVersion, Created: now.UTC(), Project: js}}, nil
}

// Add adds part name with the content of f (read from its start; the
// caller closes f after WriteTo).
func (w *Writer) Add(name string, f *os.File) error {
	if _, ok := partBound(name, Limits{}); !ok || name == ManifestFile {
		return fmt.Errorf("backup: %q is not a part", name)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return fmt.Errorf("backup: %s: %w", name, err)
	}
	w.parts = append(w.parts, source{name: name, f: f, size: n, sum: hex.EncodeToString(h.Sum(nil))})
	return nil
}

// AddBytes adds part name with content b (the secrets).
func (w *Writer) AddBytes(name string, b []byte, tmp string) error {
	f, err := os.CreateTemp(tmp, "backup-part-*")
	if err != nil {
		return err
	}
	os.Remove(f.Name())
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	return w.Add(name, f)
}

// WriteTo writes the backup to out and closes the parts' files.
func (w *Writer) WriteTo(out io.Writer) (int64, error) {
	defer func() {
		for _, p := range w.parts {
			p.f.Close()
		}
	}()
	sort.SliceStable(w.parts, func(i, j int) bool { return order(w.parts[i].name) < order(w.parts[j].name) })
	w.m.Parts = nil
	for _, p := range w.parts {
		w.m.Parts = append(w.m.Parts, Part{Name: p.name, Size: p.size, SHA256: p.sum})
	}
	manifest, err := json.MarshalIndent(w.m, "", "  ")
	if err != nil {
		return 0, err
	}
	cw := &countWriter{w: out}
	gz := gzip.NewWriter(cw)
	tw := tar.NewWriter(gz)
	hdr := func(name string, size int64) *tar.Header {
		return &tar.Header{Name: name, Size: size, Mode: 0o600, ModTime: w.m.Created, Typeflag: tar.TypeReg, Format: tar.FormatPAX}
	}
	if err := tw.WriteHeader(hdr(ManifestFile, int64(len(manifest)))); err != nil {
		return cw.n, err
	}
	if _, err := tw.Write(manifest); err != nil {
		return cw.n, err
	}
	for _, p := range w.parts {
		if err := tw.WriteHeader(hdr(p.name, p.size)); err != nil {
			return cw.n, err
		}
		if _, err := p.f.Seek(0, io.SeekStart); err != nil {
			return cw.n, err
		}
		if _, err := io.CopyN(tw, p.f, p.size); err != nil {
			return cw.n, fmt.Errorf("backup: %s: %w", p.name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return cw.n, err
	}
	err = gz.Close()
	return cw.n, err
}

// order puts the small parts first, so a reader meets them early.
func order(name string) int {
	switch name {
	case SecretsFile:
		return 0
	case SQLiteFile, PGDumpFile:
		return 1
	case MediaFile:
		return 2
	}
	return 3
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
