package web

import (
	"cmp"
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"html/template"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/url"
	"os"
	"path"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/opus-hosting/opus/internal/excerpt"
	"github.com/opus-hosting/opus/internal/names"
	"github.com/opus-hosting/opus/internal/pack"
	"github.com/opus-hosting/opus/internal/uploader"
	opusv1 "github.com/opus-hosting/opus/proto/opus/v1"
)

// UploadLimits bound what the console takes from a browser. opusd gives
// the numbers it gives the API (MaxUpload, the largest archive
// UploadSource takes) and the upload store (Tree, what one app may unpack
// to), so the console refuses what they would, before it sends anything.
type UploadLimits struct {
	// MaxUpload bounds the file bytes of one form: an archive as sent,
	// or a folder's files.
	MaxUpload int64
	// Tree bounds what a folder or zip unpacks to: entries, bytes, one
	// file. Its MaxName and MaxDepth, when 0, are the console's own.
	Tree pack.Limits
}

// Bounds of an upload form the API has no numbers for: they bound what a
// browser may make the console parse and hold.
const (
	// maxUploadName bounds a file's path as the browser sends it;
	// maxUploadDepth its folders.
	maxUploadName  = 1024
	maxUploadDepth = 32
	// maxUploadFields bounds the form's text fields, maxUploadField one.
	maxUploadFields = 32
	maxUploadField  = 4 << 10
	// partOverhead is what each part's boundary and headers may add to
	// the request beyond its file bytes.
	partOverhead = 2 << 10
	// uploadTimeout bounds one upload form: receiving it, packing and
	// sending the archive, the API call (about 110 kB/s for 64 MiB).
	uploadTimeout = 10 * time.Minute
	// uploadsAtOnce bounds the upload forms handled at the same time;
	// each may hold up to MaxUpload bytes in a temporary file.
	uploadsAtOnce = 4
	// uploadsPerUser bounds those of one user: an upload may take
	// uploadTimeout, so one user sending slowly must not keep everyone
	// else's out.
	uploadsPerUser = 1
	// maxCSRF bounds the CSRF field read (the service's tokens are 43
	// characters).
	maxCSRF = 100
)

// Form fields of the upload forms. csrf must be the form's first field:
// the token is checked before anything else of the request is read.
const (
	folderField  = "folder"  // <input type=file webkitdirectory multiple>
	archiveField = "archive" // one .zip, .tar.gz, .tgz or .tar
)

type multipartKey struct{}

// bodyLimit bounds an upload request: the file bytes, and each part's
// boundary and headers (a folder sends one part per file).
func (l UploadLimits) bodyLimit() int64 {
	parts := l.Tree.MaxEntries
	if parts <= 0 {
		parts = 1
	}
	return l.MaxUpload + (parts+maxUploadFields)*partOverhead
}

// openUpload checks an upload form's CSRF token, its first part, and
// leaves the rest of the form to the handler (in the request's context).
// It never uses ParseMultipartForm, whose temporary files and memory the
// console could not bound as it must.
func (c *Console) openUpload(w http.ResponseWriter, r *http.Request, v *viewer) (*http.Request, bool) {
	r.Body = http.MaxBytesReader(w, r.Body, c.uploads.bodyLimit())
	mr, err := r.MultipartReader()
	if err != nil {
		http.Error(w, "this form sends files: it must be multipart/form-data (reload the page and try again)", http.StatusBadRequest)
		return nil, false
	}
	tok := ""
	if p, err := mr.NextPart(); err == nil {
		if name, _, ok := disposition(p); ok && name == "csrf" {
			b, _ := io.ReadAll(io.LimitReader(p, maxCSRF))
			tok = string(b)
		}
	}
	if subtle.ConstantTimeCompare([]byte(tok), []byte(v.CSRF)) != 1 {
		c.log.Warn("console: upload form without a valid CSRF token refused", "uid", v.UID, "remote", remoteAddr(r), "path", r.URL.Path)
		http.Error(w, "the form's CSRF token is missing or wrong: reload the page and try again", http.StatusForbidden)
		return nil, false
	}
	r.PostForm = url.Values{}
	return r.WithContext(context.WithValue(r.Context(), multipartKey{}, mr)), true
}

// disposition is a form part's field name and file name (with its
// folders: Go's Part.FileName keeps only the last element, and a
// browser's folder upload names each file by its path in the folder),
// and whether the part carries a file.
func disposition(p *multipart.Part) (name, filename string, ok bool) {
	_, params, err := mime.ParseMediaType(p.Header.Get("Content-Disposition"))
	if err != nil {
		return "", "", false
	}
	filename, isFile := params["filename"]
	return params["name"], filename, isFile || params["name"] != ""
}

// upload is what an upload form sent, once stored by the API.
type upload struct {
	digest, origin string
	// app is the app name it suggests: the folder's, or the archive's
	// without its extension.
	app string
}

// uploadError is an upload form refused, with the words to show and the
// form field they are about ("" for the file inputs).
type uploadError struct {
	code  int
	msg   string
	field string
}

func (e *uploadError) Error() string { return e.msg }

func refuse(code int, format string, args ...any) *uploadError {
	return &uploadError{code: code, msg: fmt.Sprintf(format, args...)}
}

// errUploadEnded stops the packing of an archive whose upload ended.
var errUploadEnded = errors.New("the upload ended")

// receive reads an upload form after its CSRF token: text fields into
// r.PostForm, and a folder's files, a zip or a tar(.gz), which it sends
// to the API (UploadSource, as the signed-in user, counted against their
// quota as from opusctl). A folder or zip is packed as opusctl packs a
// directory (internal/pack); a tar is sent as it comes. Every size, count
// and name is bounded; the console reads no path the browser names.
//
// check, when not nil, judges the text fields before any file is read
// (they come first in the forms), so that a form the API would refuse
// for them stores nothing.
func (c *Console) receive(ctx context.Context, r *http.Request, check func(url.Values) *uploadError) (*upload, *uploadError) {
	v := viewerFrom(r)
	mr, _ := r.Context().Value(multipartKey{}).(*multipart.Reader)
	if mr == nil {
		return nil, refuse(http.StatusBadRequest, "the form sent no files: choose a folder or an archive")
	}
	tooBig := refuse(http.StatusRequestEntityTooLarge, "The upload is larger than %s, the most this host takes: leave out what the app does not need to run (media, virtualenvs, node_modules), or deploy it from git.", sizeText(c.uploads.MaxUpload))
	if r.ContentLength > c.uploads.bodyLimit() {
		return nil, tooBig
	}
	var (
		entries  []pack.Entry
		spool    *os.File // the folder's files or the zip, unlinked
		spooled  int64
		archive  string // the archive's file name
		sent     *upload
		fields   int
		lastPart error
	)
	defer func() {
		if spool != nil {
			spool.Close()
		}
	}()
	// toSpool appends a part to the spool, within MaxUpload in all.
	toSpool := func(p io.Reader) (int64, *uploadError) {
		if spool == nil {
			f, err := os.CreateTemp("", "opus-console-upload-*")
			if err != nil {
				return 0, refuse(http.StatusInternalServerError, "the console could not store the upload for a moment: %v", err)
			}
			os.Remove(f.Name())
			spool = f
		}
		n, err := io.Copy(spool, io.LimitReader(p, c.uploads.MaxUpload-spooled+1))
		spooled += n
		if err != nil {
			return 0, readRefusal(err, tooBig)
		}
		if spooled > c.uploads.MaxUpload {
			return 0, tooBig
		}
		return n, nil
	}
	for {
		p, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			lastPart = err
			break
		}
		name, filename, ok := disposition(p)
		if isFile := name == folderField || name == archiveField; isFile && check != nil {
			if uerr := check(r.PostForm); uerr != nil {
				return nil, uerr
			}
			check = nil
		}
		switch {
		case !ok:
			return nil, refuse(http.StatusBadRequest, "the form has a part without a field name; reload the page and try again")
		case name == "csrf":
			// Sent once, first.
		case filename == "" && name != folderField && name != archiveField:
			fields++
			if fields > maxUploadFields {
				return nil, refuse(http.StatusBadRequest, "the form has more than %d fields", maxUploadFields)
			}
			b, err := io.ReadAll(io.LimitReader(p, maxUploadField+1))
			if err != nil {
				return nil, readRefusal(err, tooBig)
			}
			if len(b) > maxUploadField {
				return nil, refuse(http.StatusBadRequest, "the form's field %q is longer than %d bytes", name, maxUploadField)
			}
			r.PostForm.Add(name, string(b))
		case filename == "":
			// A file field left empty.
		case name == folderField:
			if archive != "" {
				return nil, bothGiven
			}
			if lim := c.uploads.Tree.MaxEntries; lim > 0 && int64(len(entries)) >= lim {
				return nil, refuse(http.StatusRequestEntityTooLarge, "The folder holds more than %d files, the most an app may have.", lim)
			}
			if len(filename) > maxUploadName {
				return nil, refuse(http.StatusBadRequest, "A file's path in the folder is longer than %d bytes.", maxUploadName)
			}
			off := spooled
			n, uerr := toSpool(p)
			if uerr != nil {
				return nil, uerr
			}
			f := spool
			entries = append(entries, pack.Entry{Name: filename, Size: n, Open: func() (io.ReadCloser, error) {
				return io.NopCloser(io.NewSectionReader(f, off, n)), nil
			}})
		case name == archiveField:
			if archive != "" || len(entries) > 0 {
				return nil, bothGiven
			}
			base := path.Base(strings.ReplaceAll(filename, `\`, "/"))
			if len(base) > maxUploadName {
				return nil, refuse(http.StatusBadRequest, "The archive's name is longer than %d bytes.", maxUploadName)
			}
			// The name names the upload to its owner and admins.
			base = excerpt.Line(base, maxUploadName)
			archive = base
			switch kind := archiveKind(base); kind {
			case "zip":
				if _, uerr := toSpool(p); uerr != nil {
					return nil, uerr
				}
			case "tar":
				// Sent as it arrives: the upload store checks it.
				body := &capped{r: p, left: c.uploads.MaxUpload}
				digest, err := uploader.Send(ctx, v.rpc, origin(base, false), body, 0)
				if body.over {
					return nil, tooBig
				}
				if err != nil {
					return nil, c.apiRefusal("the archive "+base, err)
				}
				sent = &upload{digest: digest, origin: origin(base, false), app: stem(base)}
			default:
				return nil, refuse(http.StatusUnprocessableEntity, "%s is not a .zip, .tar.gz, .tgz or .tar archive: choose the app's folder, or an archive of it.", base)
			}
		default:
			return nil, refuse(http.StatusBadRequest, "the form has an unknown file field %q; reload the page and try again", name)
		}
	}
	if lastPart != nil {
		return nil, readRefusal(lastPart, tooBig)
	}
	if check != nil {
		if uerr := check(r.PostForm); uerr != nil {
			return nil, uerr
		}
	}
	switch {
	case sent != nil:
		return sent, nil
	case len(entries) > 0:
		return c.packAndSend(ctx, v, func(w io.Writer) (string, error) {
			return pack.WriteEntries(ctx, w, entries, c.treeLimits(), pack.StripTop)
		}, "the folder", func(top string) (string, string) {
			// The folder's name names the upload to its owner and admins.
			top = excerpt.Line(top, maxUploadName)
			return origin(top, true), top
		})
	case archive != "":
		size := spooled
		return c.packAndSend(ctx, v, func(w io.Writer) (string, error) {
			return pack.FromZip(ctx, spool, size, w, c.treeLimits())
		}, "the archive "+archive, func(top string) (string, string) {
			if top == "" {
				top = stem(archive)
			}
			return origin(archive, false), top
		})
	}
	return nil, refuse(http.StatusUnprocessableEntity, "Choose the app's folder, or a .zip or .tar.gz of it, to upload.")
}

var bothGiven = refuse(http.StatusUnprocessableEntity, "Choose a folder or an archive, not both.")

// packAndSend packs an archive with write and sends it as it is written;
// what write returns (the folder taken out of the names) names the app
// and its origin through named.
func (c *Console) packAndSend(ctx context.Context, v *viewer, write func(io.Writer) (string, error), what string, named func(top string) (origin, app string)) (*upload, *uploadError) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	pr, pw := io.Pipe()
	type packed struct {
		top string
		err error
	}
	done := make(chan packed, 1)
	go func() {
		top, err := write(pw)
		pw.CloseWithError(err)
		done <- packed{top, err}
	}()
	// The origin is known once packing ends; until then the archive is
	// named by what it came from.
	digest, err := uploader.Send(ctx, v.rpc, what, pr, 0)
	pr.CloseWithError(errUploadEnded)
	cancel()
	res := <-done
	if res.err != nil && !errors.Is(res.err, errUploadEnded) && !errors.Is(res.err, context.Canceled) {
		return nil, refuse(http.StatusUnprocessableEntity, "%s was not uploaded: %v.", upperFirst(what), res.err)
	}
	if err != nil {
		return nil, c.apiRefusal(what, err)
	}
	o, app := named(res.top)
	return &upload{digest: digest, origin: o, app: app}, nil
}

// apiRefusal words UploadSource's refusal of what.
func (c *Console) apiRefusal(what string, err error) *uploadError {
	st := status.Convert(err)
	code := httpCode(st.Code())
	if st.Code() == codes.ResourceExhausted {
		code = http.StatusRequestEntityTooLarge
	}
	if code == http.StatusInternalServerError {
		c.log.Error("console: upload", "err", st.Message())
	}
	return refuse(code, "%s was not uploaded: %s.", upperFirst(what), strings.TrimSuffix(strings.TrimPrefix(st.Message(), "upload: "), "."))
}

// readRefusal words a failure to read the form: too large, or cut off.
func readRefusal(err error, tooBig *uploadError) *uploadError {
	if mbe := (*http.MaxBytesError)(nil); errors.As(err, &mbe) {
		return tooBig
	}
	return refuse(http.StatusBadRequest, "the upload was cut off before it ended (%v); try again", err)
}

// capped reads at most left bytes of r, noting when r has more.
type capped struct {
	r    io.Reader
	left int64
	over bool
}

func (c *capped) Read(p []byte) (int, error) {
	if c.left <= 0 {
		var one [1]byte
		if n, _ := c.r.Read(one[:]); n > 0 {
			c.over = true
			return 0, errors.New("the archive is too large")
		}
		return 0, io.EOF
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.r.Read(p)
	c.left -= int64(n)
	return n, err
}

// treeLimits are the store's limits with the console's own bounds on
// names.
func (c *Console) treeLimits() pack.Limits {
	l := c.uploads.Tree
	if l.MaxName == 0 {
		l.MaxName = maxUploadName
	}
	if l.MaxDepth == 0 {
		l.MaxDepth = maxUploadDepth
	}
	return l
}

// archiveKind is "zip", "tar" (.tar.gz, .tgz, .tar) or "" by a file's name.
func archiveKind(name string) string {
	n := strings.ToLower(name)
	switch {
	case strings.HasSuffix(n, ".zip"):
		return "zip"
	case strings.HasSuffix(n, ".tar.gz"), strings.HasSuffix(n, ".tgz"), strings.HasSuffix(n, ".tar"):
		return "tar"
	}
	return ""
}

// stem is an archive's name without its extension: the app name it
// suggests.
func stem(name string) string {
	n := strings.ToLower(name)
	for _, ext := range []string{".tar.gz", ".tgz", ".tar", ".zip"} {
		if strings.HasSuffix(n, ext) {
			return name[:len(name)-len(ext)]
		}
	}
	return name
}

// origin is what the project page says an upload came from.
func origin(name string, folder bool) string {
	if folder {
		return name + "/ (a folder, from the web console)"
	}
	return name + " (from the web console)"
}

func upperFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// sizeText is n bytes in words: "64 MiB".
func sizeText(n int64) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d bytes", n)
}

// uploadSlot takes one of the uploadsAtOnce slots for uid, within its
// uploadsPerUser, or says to come back.
func (c *Console) uploadSlot(uid uint32) (func(), *uploadError) {
	c.uploadsMu.Lock()
	defer c.uploadsMu.Unlock()
	if c.uploadsBy[uid] >= uploadsPerUser {
		return nil, refuse(http.StatusServiceUnavailable, "You are sending an upload already (in another tab or window, or one that was cut off): wait until it has ended, then try again.")
	}
	select {
	case c.uploadSlots <- struct{}{}:
	default:
		return nil, refuse(http.StatusServiceUnavailable, "The console is receiving %d uploads already; try again in a minute.", uploadsAtOnce)
	}
	c.uploadsBy[uid]++
	return sync.OnceFunc(func() {
		c.uploadsMu.Lock()
		defer c.uploadsMu.Unlock()
		if c.uploadsBy[uid]--; c.uploadsBy[uid] <= 0 {
			delete(c.uploadsBy, uid)
		}
		<-c.uploadSlots
	}), nil
}

// uploadRequest runs an upload form's handler part common to all three:
// a slot, the time bound, the form received and sent.
func (c *Console) uploadRequest(w http.ResponseWriter, r *http.Request, check func(url.Values) *uploadError) (context.Context, context.CancelFunc, *upload, *uploadError) {
	release, uerr := c.uploadSlot(viewerFrom(r).UID)
	if uerr != nil {
		return r.Context(), func() {}, nil, uerr
	}
	// The read deadline bounds a browser that sends slowly; the context
	// bounds everything else.
	_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(uploadTimeout))
	ctx, cancel := context.WithTimeout(r.Context(), uploadTimeout)
	up, uerr := c.receive(ctx, r, check)
	if uerr != nil && r.ContentLength <= c.uploads.bodyLimit() {
		// Read what is left of a refused form (bounded by the body limit
		// and the read deadline): a browser still sending when the answer
		// comes and the connection closes shows an error of its own, not
		// the console's words.
		io.Copy(io.Discard, r.Body)
	}
	release()
	return ctx, cancel, up, uerr
}

// appView is a page with one of its project's apps in view, for a
// template about that app (its update form).
type appView struct {
	*page
	App string
}

// fileField is an upload form's file inputs: their id prefix, their
// error (errorOf) and the attributes that mark them refused (invalid).
type fileField struct {
	ID      string
	Error   *fieldError
	Invalid template.HTMLAttr
}

// newFileField is the file inputs of the form id, refused when errs has
// key.
func newFileField(id string, errs map[string]string, key string) fileField {
	return fileField{ID: id, Error: errorOf(errs, key), Invalid: invalid(errs, key)}
}

func uploadedSource(up *upload) *opusv1.AppSource {
	return &opusv1.AppSource{Kind: &opusv1.AppSource_Upload{Upload: &opusv1.UploadedSource{Digest: up.digest, Origin: up.origin}}}
}

// checkAppName judges the form's app name, when one is typed, by the
// API's rule, before anything is uploaded; field is where it is shown.
func checkAppName(f url.Values, field string) *uploadError {
	n := strings.TrimSpace(f.Get("app"))
	if n == "" {
		return nil
	}
	if err := names.ValidateAppName(n); err != nil {
		return &uploadError{code: http.StatusUnprocessableEntity, msg: err.Error(), field: field}
	}
	return nil
}

// checkProject refuses an upload form for a project the signed-in user
// cannot see (another user's, or none) before any file is read: the form
// is then "not found", as the API would answer after the upload, and
// nothing is stored. The refusal page asks the API again, so it is the
// API's own.
func (c *Console) checkProject(r *http.Request) *uploadError {
	_, err := viewerFrom(r).rpc.GetProject(r.Context(), &opusv1.GetProjectRequest{Name: r.PathValue("name")})
	if err != nil {
		return &uploadError{code: httpCode(status.Code(err)), msg: status.Convert(err).Message()}
	}
	return nil
}

// appName is the form's app name, or the upload's.
func appName(r *http.Request, up *upload) string {
	if n := strings.TrimSpace(r.PostForm.Get("app")); n != "" {
		return n
	}
	return up.app
}

// createFromUpload creates a project whose one app is the upload.
func (c *Console) createFromUpload(w http.ResponseWriter, r *http.Request) {
	v := viewerFrom(r)
	ctx, cancel, up, uerr := c.uploadRequest(w, r, func(f url.Values) *uploadError {
		if err := names.ValidateProject(strings.TrimSpace(f.Get("name"))); err != nil {
			return &uploadError{code: http.StatusUnprocessableEntity, msg: err.Error(), field: "upload.name"}
		}
		return checkAppName(f, "upload.app")
	})
	defer cancel()
	refused := func(code int, field, msg string) {
		errs := map[string]string{"": msg}
		if field != "" {
			errs[field] = msg
		}
		c.render(w, code, "new", &page{Title: "New project", User: v, Form: formMap(r), AppRows: rows(), Errors: errs, Submitted: "upload"})
	}
	if uerr != nil {
		refused(uerr.code, cmp.Or(uerr.field, "upload"), uerr.msg)
		return
	}
	op, err := v.rpc.CreateProject(ctx, &opusv1.CreateProjectRequest{
		Name: strings.TrimSpace(r.PostForm.Get("name")), Admin: r.PostForm.Get("admin") == "on",
		Apps: []*opusv1.AppSpec{{Name: appName(r, up), Source: uploadedSource(up)}},
	})
	if err != nil {
		field, msg := fieldOf(err, map[string]string{"name": "upload.name", "apps": "upload", "apps[0].name": "upload.app"})
		if field == "" {
			field = "upload"
		}
		refused(httpCode(status.Code(err)), field, msg)
		return
	}
	http.Redirect(w, r, "/ops/"+op.GetId(), http.StatusSeeOther)
}

// addFromUpload adds an app from an upload to a project.
func (c *Console) addFromUpload(w http.ResponseWriter, r *http.Request) {
	v := viewerFrom(r)
	ctx, cancel, up, uerr := c.uploadRequest(w, r, func(f url.Values) *uploadError {
		if uerr := c.checkProject(r); uerr != nil {
			return uerr
		}
		return checkAppName(f, "app")
	})
	defer cancel()
	if uerr != nil {
		c.renderProject(w, r, uerr.code, map[string]string{"upload-add": uerr.msg, "upload-add." + cmp.Or(uerr.field, "file"): uerr.msg})
		return
	}
	op, err := v.rpc.AddApp(ctx, &opusv1.AddAppRequest{Project: r.PathValue("name"), App: &opusv1.AppSpec{Name: appName(r, up), Source: uploadedSource(up)}})
	c.uploadMutated(w, r, op, err, "upload-add", map[string]string{"app.name": "app", "app": "file"})
}

// updateByUpload moves an app to a new upload.
func (c *Console) updateByUpload(w http.ResponseWriter, r *http.Request) {
	v := viewerFrom(r)
	app := r.PathValue("app")
	form := "update-" + app
	ctx, cancel, up, uerr := c.uploadRequest(w, r, func(url.Values) *uploadError { return c.checkProject(r) })
	defer cancel()
	if uerr != nil {
		c.renderProject(w, r, uerr.code, map[string]string{form: uerr.msg, form + ".file": uerr.msg})
		return
	}
	op, err := v.rpc.UpdateApp(ctx, &opusv1.UpdateAppRequest{Project: r.PathValue("name"), App: app, Source: uploadedSource(up)})
	c.uploadMutated(w, r, op, err, form, map[string]string{"source": "file", "app": "file"})
}

// uploadMutated is mutated for an upload form: a refusal shows in full at
// the top of the page and next to the field it concerns.
func (c *Console) uploadMutated(w http.ResponseWriter, r *http.Request, op *opusv1.Operation, err error, form string, fields map[string]string) {
	if err == nil || (status.Code(err) == codes.NotFound && strings.HasPrefix(status.Convert(err).Message(), "project ")) {
		c.mutated(w, r, op, err, form, fields)
		return
	}
	field, msg := fieldOf(err, fields)
	if field == "" {
		field = "file"
	}
	c.renderProject(w, r, httpCode(status.Code(err)), map[string]string{form: msg, form + "." + field: msg})
}
