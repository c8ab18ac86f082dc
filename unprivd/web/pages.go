package web

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"path"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	opusv1 "github.com/opus-hosting/opus/proto/opus/v1"
	"github.com/opus-hosting/opus/unprivd/credential"
)

// page is what every template gets.
type page struct {
	Title string
	User  *viewer
	// Errors are the API's messages by form field ("name", "app0",
	// "add.url", ...); "" is the form as a whole.
	Errors map[string]string
	Form   map[string]string
	// Page-specific.
	Projects  []*opusv1.Project
	Project   *opusv1.Project
	Ops       []*opusv1.Operation
	Op        *opusv1.Operation
	Logs      []string
	LogsError string
	Message   string
	// Notice is a word from notices, shown once on the project page.
	Notice string
	// Alert is the error of the action just tried, shown at the top of
	// the project page; AlertAt, when set, is the anchor of the field the
	// error is shown next to.
	Alert   string
	AlertAt string
	// Submitted names the project page's form that was sent and refused
	// ("settings", "add", "update-APP"): it shows what was typed, not the
	// project's values.
	Submitted string
	// App is the app a confirmation page is about.
	App     *opusv1.App
	AppRows []int
}

func (c *Console) render(w http.ResponseWriter, code int, name string, p *page) {
	var b strings.Builder
	if err := c.pages[name].ExecuteTemplate(&b, "layout", p); err != nil {
		c.log.Error("console: render", "page", name, "err", err)
		http.Error(w, "the console could not render this page; see opusd's log", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	io.WriteString(w, b.String())
}

// apiError renders a failed API call that has no form to go back to:
// NotFound is a 404 page with the API's own message, and so on.
func (c *Console) apiError(w http.ResponseWriter, r *http.Request, err error) {
	st := status.Convert(err)
	code := httpCode(st.Code())
	c.render(w, code, "error", &page{Title: http.StatusText(code), User: viewerFrom(r), Message: st.Message()})
}

func httpCode(c codes.Code) int {
	switch c {
	case codes.NotFound:
		return http.StatusNotFound
	case codes.InvalidArgument, codes.FailedPrecondition, codes.AlreadyExists, codes.OutOfRange:
		return http.StatusUnprocessableEntity
	case codes.PermissionDenied:
		return http.StatusForbidden
	case codes.Unauthenticated:
		return http.StatusUnauthorized
	case codes.Unimplemented:
		return http.StatusNotImplemented
	case codes.Unavailable:
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// fieldOf maps the request field an API error is about (the path in its
// BadRequest detail: the message names it in words) to a form field,
// through m (request field prefix → form field); the whole form ("") when
// none matches.
func fieldOf(err error, m map[string]string) (string, string) {
	st := status.Convert(err)
	msg := st.Message()
	for _, d := range st.Details() {
		br, ok := d.(*errdetails.BadRequest)
		if !ok || len(br.GetFieldViolations()) == 0 {
			continue
		}
		f := br.GetFieldViolations()[0].GetField()
		// The longest matching prefix wins.
		best, bestLen := "", -1
		for prefix, field := range m {
			if (f == prefix || strings.HasPrefix(f, prefix+".") || strings.HasPrefix(f, prefix+"[")) && len(prefix) > bestLen {
				best, bestLen = field, len(prefix)
			}
		}
		if bestLen >= 0 {
			return best, msg
		}
	}
	return "", msg
}

func (c *Console) loginPage(w http.ResponseWriter, r *http.Request) {
	if _, err := c.session(r); err == nil {
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return
	}
	c.renderLogin(w, r, http.StatusOK, "", "")
}

// renderLogin shows the sign-in form with a fresh double-submit token.
func (c *Console) renderLogin(w http.ResponseWriter, r *http.Request, code int, userField, msg string) {
	tok, err := credential.NewToken()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	http.SetCookie(w, &http.Cookie{Name: preCookie, Value: tok, Path: "/", MaxAge: 3600, Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode})
	p := &page{Title: "Sign in", Form: map[string]string{"user": userField, "csrf": tok}}
	if msg != "" {
		p.Errors = map[string]string{"": msg}
	}
	c.render(w, code, "login", p)
}

// maxSignInForm bounds the sign-in form.
const maxSignInForm = 16 << 10

// retryBusy is the Retry-After, in seconds, when the service is too busy
// to check a password: about what two checks take.
const retryBusy = "2"

// loginPassword signs in with a user name (or uid) and console password,
// through the service (ConsoleSessions), which limits and logs failures.
func (c *Console) loginPassword(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxSignInForm)
	if err := r.ParseForm(); err != nil {
		http.Error(w, "bad form", http.StatusBadRequest)
		return
	}
	ck, err := r.Cookie(preCookie)
	if err != nil || ck.Value == "" || subtle.ConstantTimeCompare([]byte(r.PostForm.Get("csrf")), []byte(ck.Value)) != 1 {
		c.log.Warn("console: sign-in form without a valid CSRF token refused", "remote", remoteAddr(r))
		http.Error(w, "the form's CSRF token is missing or wrong: reload the sign-in page", http.StatusForbidden)
		return
	}
	field := strings.TrimSpace(r.PostForm.Get("user"))
	sc, err := c.conns.sessions()
	var res *opusv1.SignInWithPasswordResponse
	if err == nil {
		res, err = sc.SignInWithPassword(r.Context(), &opusv1.SignInWithPasswordRequest{User: field, Password: r.PostForm.Get("password"), RemoteAddr: remoteAddr(r)})
	}
	if err != nil {
		c.signInRefused(w, r, field, err)
		return
	}
	c.setSession(w, res.GetSessionId(), res.GetSession())
	http.SetCookie(w, &http.Cookie{Name: preCookie, Value: "", Path: "/", MaxAge: -1, Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

// loginLink signs in with a one-time link from "opusctl web login",
// through the service, which limits unknown links per address.
func (c *Console) loginLink(w http.ResponseWriter, r *http.Request) {
	sc, err := c.conns.sessions()
	var res *opusv1.SignInWithLinkResponse
	if err == nil {
		res, err = sc.SignInWithLink(r.Context(), &opusv1.SignInWithLinkRequest{Token: r.URL.Query().Get("t"), RemoteAddr: remoteAddr(r)})
	}
	if err != nil {
		c.signInRefused(w, r, "", err)
		return
	}
	c.setSession(w, res.GetSessionId(), res.GetSession())
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

// signInRefused shows the sign-in form again with the service's answer:
// its message, and its code as the HTTP status. The service logged the
// refusal; only a failure to reach it is logged here.
func (c *Console) signInRefused(w http.ResponseWriter, r *http.Request, field string, err error) {
	st := status.Convert(err)
	code := http.StatusInternalServerError
	switch st.Code() {
	case codes.Unauthenticated:
		code = http.StatusUnauthorized
	case codes.ResourceExhausted:
		code = http.StatusTooManyRequests
	case codes.PermissionDenied:
		code = http.StatusForbidden
	case codes.InvalidArgument:
		code = http.StatusBadRequest
	case codes.Unavailable:
		code = http.StatusServiceUnavailable
		w.Header().Set("Retry-After", retryBusy)
	default:
		c.log.Error("console: sign-in", "user", field, "err", st.Message())
	}
	c.renderLogin(w, r, code, field, st.Message())
}

func (c *Console) logout(w http.ResponseWriter, r *http.Request) {
	v := viewerFrom(r)
	sc, err := c.conns.sessions()
	if err == nil {
		_, err = sc.SignOut(r.Context(), &opusv1.SignOutRequest{SessionId: v.sessionID})
	}
	if err != nil {
		c.log.Error("console: sign out", "err", status.Convert(err).Message())
	}
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: "", Path: "/", MaxAge: -1, Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode})
	c.log.Info("console: signed out", "uid", v.UID)
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}

func (c *Console) projectsPage(w http.ResponseWriter, r *http.Request) {
	v := viewerFrom(r)
	res, err := v.rpc.ListProjects(r.Context(), &opusv1.ListProjectsRequest{})
	if err != nil {
		c.apiError(w, r, err)
		return
	}
	c.render(w, http.StatusOK, "projects", &page{Title: "Projects", User: v, Projects: res.GetProjects()})
}

// newAppRows is how many app rows the create form has (no script adds
// rows; more apps are added on the project page).
const newAppRows = 3

func (c *Console) newPage(w http.ResponseWriter, r *http.Request) {
	c.render(w, http.StatusOK, "new", &page{Title: "New project", User: viewerFrom(r), Form: map[string]string{"admin": "on"}, AppRows: rows()})
}

func rows() []int {
	out := make([]int, newAppRows)
	for i := range out {
		out[i] = i
	}
	return out
}

// gitAppSpec makes an app from a form's git URL, ref and optional name;
// the name defaults to the URL's last element without ".git", as opusctl
// does.
func gitAppSpec(rawURL, ref, name string) *opusv1.AppSpec {
	rawURL, ref, name = strings.TrimSpace(rawURL), strings.TrimSpace(ref), strings.TrimSpace(name)
	if name == "" {
		name = strings.TrimSuffix(path.Base(strings.TrimRight(rawURL, "/")), ".git")
	}
	return &opusv1.AppSpec{Name: name, Source: &opusv1.AppSource{Kind: &opusv1.AppSource_Git{Git: &opusv1.GitSource{Url: rawURL, Ref: ref}}}}
}

func formMap(r *http.Request) map[string]string {
	m := map[string]string{}
	for k, v := range r.PostForm {
		if k != "csrf" && len(v) > 0 {
			m[k] = v[0]
		}
	}
	return m
}

func (c *Console) createProject(w http.ResponseWriter, r *http.Request) {
	v := viewerFrom(r)
	f := r.PostForm
	req := &opusv1.CreateProjectRequest{Name: strings.TrimSpace(f.Get("name")), Admin: f.Get("admin") == "on"}
	fields := map[string]string{"name": "name", "apps": ""}
	for i := range newAppRows {
		u := f.Get(fmt.Sprintf("url%d", i))
		if strings.TrimSpace(u) == "" {
			continue
		}
		fields[fmt.Sprintf("apps[%d]", len(req.Apps))] = fmt.Sprintf("app%d", i)
		req.Apps = append(req.Apps, gitAppSpec(u, f.Get(fmt.Sprintf("ref%d", i)), f.Get(fmt.Sprintf("app%d", i))))
	}
	// As opusctl create: a project with no apps is asked for, not what a
	// form left empty by mistake gives.
	var appsErr string
	switch empty := f.Get("empty") == "on"; {
	case len(req.Apps) == 0 && !empty:
		appsErr = `give at least one app's git URL, or tick "No apps yet" to create a project with no apps`
	case len(req.Apps) > 0 && empty:
		appsErr = `"No apps yet" creates a project with no apps; untick it to deploy the apps given`
	}
	if appsErr != "" {
		c.render(w, http.StatusUnprocessableEntity, "new", &page{Title: "New project", User: v, Form: formMap(r), AppRows: rows(),
			Errors: map[string]string{"apps": appsErr}})
		return
	}
	op, err := v.rpc.CreateProject(r.Context(), req)
	if err != nil {
		field, msg := fieldOf(err, fields)
		c.render(w, httpCode(status.Code(err)), "new", &page{Title: "New project", User: v, Form: formMap(r), AppRows: rows(),
			Errors: map[string]string{field: msg}})
		return
	}
	http.Redirect(w, r, "/ops/"+op.GetId(), http.StatusSeeOther)
}

// notices are what the project page may say after a form that started
// nothing, by the word its query names (so that no text of the request
// is shown back).
var notices = map[string]string{
	"unchanged": "Nothing to change: the settings are already as given; nothing was restarted.",
}

// projectPage shows a project: apps, settings, operations, logs, forms.
func (c *Console) projectPage(w http.ResponseWriter, r *http.Request) {
	c.renderProject(w, r, http.StatusOK, nil)
}

func (c *Console) renderProject(w http.ResponseWriter, r *http.Request, code int, errs map[string]string) {
	v := viewerFrom(r)
	name := r.PathValue("name")
	p, err := v.rpc.GetProject(r.Context(), &opusv1.GetProjectRequest{Name: name})
	if err != nil {
		c.apiError(w, r, err)
		return
	}
	pg := &page{Title: p.GetName(), User: v, Project: p, Errors: map[string]string{}, Form: map[string]string{}, Notice: notices[r.URL.Query().Get("notice")]}
	if code != http.StatusOK {
		pg.Form = formMap(r)
	}
	// One message area at the top says what happened: a form's error in
	// full; a field's error next to its field, and at the top a line that
	// points to it.
	// In order, so that a form's own message ("add") comes before its
	// fields' ("add.url") and is the one at the top.
	for _, k := range slices.Sorted(maps.Keys(errs)) {
		msg := errs[k]
		form, field, isField := strings.Cut(k, ".")
		pg.Submitted = form
		if !isField {
			pg.Alert = msg
			continue
		}
		pg.Errors[k] = msg
		if pg.Alert == "" {
			pg.Alert = fmt.Sprintf("%s was not applied: %s.", formWords(form), fieldWords(field))
			pg.AlertAt = "#" + form + "-" + field
		}
	}
	if ops, err := v.rpc.ListOperations(r.Context(), &opusv1.ListOperationsRequest{Project: name, Limit: 10}); err == nil {
		pg.Ops = ops.GetOperations()
	}
	logs, err := v.rpc.GetLogs(r.Context(), &opusv1.GetLogsRequest{Project: name, Lines: 50})
	if err != nil {
		pg.LogsError = status.Convert(err).Message()
	} else {
		pg.Logs = logs.GetLines()
	}
	c.render(w, code, "project", pg)
}

// formWords names a project page form in a message.
func formWords(form string) string {
	switch {
	case form == "settings":
		return "The settings form"
	case form == "add":
		return "Adding the app"
	case strings.HasPrefix(form, "update-"):
		return fmt.Sprintf("The update of app %q", strings.TrimPrefix(form, "update-"))
	}
	return "The form"
}

// fieldWords names a form field in a message.
func fieldWords(field string) string {
	switch field {
	case "hosts":
		return "see the error next to the extra host names"
	case "env":
		return "see the error next to the environment"
	case "url":
		return "see the error next to the git URL"
	case "ref":
		return "see the error next to the ref"
	case "app":
		return "see the error next to the app name"
	}
	return "see the error next to the field marked below"
}

// mutated follows up a project form: on success to the operation's live
// page (or, when the change asked for what the project has, back to the
// project page, saying so), on failure back to the project page with the
// API's message next to the field it concerns (form.field, through fields).
func (c *Console) mutated(w http.ResponseWriter, r *http.Request, op *opusv1.Operation, err error, form string, fields map[string]string) {
	if err != nil {
		field, msg := fieldOf(err, fields)
		if field == "" {
			field = form
		} else {
			field = form + "." + field
		}
		code := httpCode(status.Code(err))
		if status.Code(err) == codes.NotFound && strings.HasPrefix(msg, "project ") {
			c.apiError(w, r, err)
			return
		}
		c.renderProject(w, r, code, map[string]string{field: msg})
		return
	}
	if op.GetUnchanged() {
		http.Redirect(w, r, "/projects/"+url.PathEscape(op.GetProject())+"?notice=unchanged", http.StatusSeeOther)
		return
	}
	http.Redirect(w, r, "/ops/"+op.GetId(), http.StatusSeeOther)
}

func (c *Console) addApp(w http.ResponseWriter, r *http.Request) {
	v, f := viewerFrom(r), r.PostForm
	op, err := v.rpc.AddApp(r.Context(), &opusv1.AddAppRequest{Project: r.PathValue("name"), App: gitAppSpec(f.Get("url"), f.Get("ref"), f.Get("app"))})
	c.mutated(w, r, op, err, "add", map[string]string{"app.name": "app", "app.source": "url", "app.source.git.ref": "ref", "app": "url"})
}

func (c *Console) updateApp(w http.ResponseWriter, r *http.Request) {
	v, f := viewerFrom(r), r.PostForm
	app := r.PathValue("app")
	spec := gitAppSpec(f.Get("url"), f.Get("ref"), app)
	op, err := v.rpc.UpdateApp(r.Context(), &opusv1.UpdateAppRequest{Project: r.PathValue("name"), App: app, Source: spec.GetSource()})
	c.mutated(w, r, op, err, "update-"+app, map[string]string{"source": "url", "source.git.ref": "ref", "app": ""})
}

func (c *Console) rollbackApp(w http.ResponseWriter, r *http.Request) {
	v := viewerFrom(r)
	app := r.PathValue("app")
	op, err := v.rpc.UpdateApp(r.Context(), &opusv1.UpdateAppRequest{Project: r.PathValue("name"), App: app, Rollback: true})
	c.mutated(w, r, op, err, "update-"+app, nil)
}

// removePage asks to confirm the removal of an app: it names the app,
// says what is lost, and asks for its name typed.
func (c *Console) removePage(w http.ResponseWriter, r *http.Request) {
	c.renderRemove(w, r, http.StatusOK, r.URL.Query().Get("drop_data") == "on", "")
}

func (c *Console) renderRemove(w http.ResponseWriter, r *http.Request, code int, dropData bool, msg string) {
	v := viewerFrom(r)
	name, app := r.PathValue("name"), r.PathValue("app")
	p, err := v.rpc.GetProject(r.Context(), &opusv1.GetProjectRequest{Name: name})
	if err != nil {
		c.apiError(w, r, err)
		return
	}
	pg := &page{Title: "Remove app " + app + " of " + name, User: v, Project: p, Alert: msg, Form: map[string]string{}}
	for _, a := range p.GetApps() {
		if a.GetName() == app {
			pg.App = a
		}
	}
	if pg.App == nil {
		c.apiError(w, r, status.Errorf(codes.NotFound, "app %q of project %q not found", app, name))
		return
	}
	if dropData {
		pg.Form["drop_data"] = "on"
	}
	c.render(w, code, "remove", pg)
}

// removeApp removes an app once its name was typed on the confirmation
// page; a wrong or missing name shows that page again, saying so.
func (c *Console) removeApp(w http.ResponseWriter, r *http.Request) {
	v := viewerFrom(r)
	app := r.PathValue("app")
	dropData := r.PostForm.Get("drop_data") == "on"
	if r.PostForm.Get("confirm") != app {
		c.renderRemove(w, r, http.StatusUnprocessableEntity, dropData, fmt.Sprintf("Nothing was removed: type the app's name, %q, to confirm.", app))
		return
	}
	op, err := v.rpc.RemoveApp(r.Context(), &opusv1.RemoveAppRequest{Project: r.PathValue("name"), App: app, DropData: dropData})
	if err != nil && status.Code(err) != codes.NotFound {
		c.renderRemove(w, r, httpCode(status.Code(err)), dropData, status.Convert(err).Message())
		return
	}
	c.mutated(w, r, op, err, "remove-"+app, nil)
}

// updateSettings turns the settings form into UpdateSettings' set/unset:
// every field is sent, so the form is the whole truth; env variables
// missing from the text are unset.
func (c *Console) updateSettings(w http.ResponseWriter, r *http.Request) {
	v, f := viewerFrom(r), r.PostForm
	name := r.PathValue("name")
	req := &opusv1.UpdateSettingsRequest{Project: name, Set: map[string]string{
		"debug": strconv.FormatBool(f.Get("debug") == "on"),
		"admin": strconv.FormatBool(f.Get("admin") == "on"),
	}}
	if hosts := strings.Join(strings.Fields(strings.ReplaceAll(f.Get("hosts"), ",", " ")), ","); hosts != "" {
		req.Set["hosts"] = hosts
	} else {
		req.Unset = append(req.Unset, "hosts")
	}
	env := map[string]bool{}
	for i, line := range strings.Split(f.Get("env"), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, val, ok := strings.Cut(line, "=")
		if !ok {
			c.renderProject(w, r, http.StatusUnprocessableEntity, map[string]string{"settings.env": fmt.Sprintf("line %d: write NAME=VALUE", i+1)})
			return
		}
		req.Set["env."+strings.TrimSpace(k)] = val
		env[strings.TrimSpace(k)] = true
	}
	if p, err := v.rpc.GetProject(r.Context(), &opusv1.GetProjectRequest{Name: name}); err == nil {
		for k := range p.GetSettings().GetEnv() {
			if !env[k] {
				req.Unset = append(req.Unset, "env."+k)
			}
		}
	}
	op, err := v.rpc.UpdateSettings(r.Context(), req)
	if err != nil && status.Code(err) != codes.NotFound {
		c.renderProject(w, r, httpCode(status.Code(err)), map[string]string{settingsField(err): status.Convert(err).Message()})
		return
	}
	c.mutated(w, r, op, err, "settings", nil)
}

// settingsField places an UpdateSettings error: its messages name the
// setting ("set: hosts: ...", "set: environment variable ..."), not a
// request field of its own.
func settingsField(err error) string {
	msg := strings.TrimPrefix(strings.TrimPrefix(status.Convert(err).Message(), "set: "), "unset: ")
	switch {
	case strings.HasPrefix(msg, "hosts"):
		return "settings.hosts"
	case strings.HasPrefix(msg, "environment variable"), strings.HasPrefix(msg, "settings.env"):
		return "settings.env"
	}
	return "settings"
}

func (c *Console) destroy(w http.ResponseWriter, r *http.Request) {
	v := viewerFrom(r)
	name := r.PathValue("name")
	if r.PostForm.Get("confirm") != name {
		c.renderProject(w, r, http.StatusUnprocessableEntity, map[string]string{"destroy": fmt.Sprintf("Nothing was destroyed: type %q to confirm.", name)})
		return
	}
	op, err := v.rpc.DeleteProject(r.Context(), &opusv1.DeleteProjectRequest{Name: name})
	c.mutated(w, r, op, err, "destroy", nil)
}

// operationPage shows an operation's steps; once it is final, the
// project's URLs. Without script it refreshes itself until final.
func (c *Console) operationPage(w http.ResponseWriter, r *http.Request) {
	v := viewerFrom(r)
	op, err := v.rpc.GetOperation(r.Context(), &opusv1.GetOperationRequest{Id: r.PathValue("id")})
	if err != nil {
		c.apiError(w, r, err)
		return
	}
	pg := &page{Title: "Operation " + op.GetId(), User: v, Op: op}
	if opFinal(op) {
		if p, err := v.rpc.GetProject(r.Context(), &opusv1.GetProjectRequest{Name: op.GetProject()}); err == nil {
			pg.Project = p
		}
	}
	c.render(w, http.StatusOK, "operation", pg)
}

// operationEvents streams the operation as server-sent events, one JSON
// Operation per change, ending when it is final.
func (c *Console) operationEvents(w http.ResponseWriter, r *http.Request) {
	v := viewerFrom(r)
	fl, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming unsupported", http.StatusInternalServerError)
		return
	}
	stream, err := v.rpc.WatchOperation(r.Context(), &opusv1.WatchOperationRequest{Id: r.PathValue("id")})
	if err != nil {
		c.apiError(w, r, err)
		return
	}
	first := true
	for {
		op, err := stream.Recv()
		if err != nil {
			if first {
				c.apiError(w, r, err)
			} else if !errors.Is(err, io.EOF) {
				fmt.Fprintf(w, "event: failure\ndata: %s\n\n", strings.ReplaceAll(status.Convert(err).Message(), "\n", " "))
				fl.Flush()
			}
			return
		}
		if first {
			w.Header().Set("Content-Type", "text/event-stream")
			w.WriteHeader(http.StatusOK)
			first = false
		}
		data, err := protojson.Marshal(op)
		if err != nil {
			return
		}
		fmt.Fprintf(w, "data: %s\n\n", data)
		fl.Flush()
	}
}

// Template helpers.

func phaseName(p opusv1.Phase) string {
	return strings.ToLower(strings.TrimPrefix(p.String(), "PHASE_"))
}

func opKindName(k opusv1.OperationKind) string {
	return strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(k.String(), "OPERATION_KIND_")), "_", " ")
}

func opStateName(s opusv1.OperationState) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "OPERATION_STATE_"))
}

func stepStateName(s opusv1.StepState) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "STEP_STATE_"))
}

func opFinal(op *opusv1.Operation) bool {
	s := op.GetState()
	return s == opusv1.OperationState_OPERATION_STATE_SUCCEEDED || s == opusv1.OperationState_OPERATION_STATE_FAILED
}

func when(t *timestamppb.Timestamp) string {
	if t == nil {
		return ""
	}
	return t.AsTime().UTC().Format("2006-01-02 15:04:05 UTC")
}

// took is the duration between two times, for steps and operations.
func took(start, end *timestamppb.Timestamp) string {
	if start == nil || end == nil {
		return ""
	}
	d := end.AsTime().Sub(start.AsTime())
	if d < time.Second {
		return d.Round(time.Millisecond).String()
	}
	return d.Round(100 * time.Millisecond).String()
}

func shortCommit(s string) string {
	if len(s) > 12 && !strings.HasPrefix(s, "sha256:") {
		return s[:12]
	}
	if len(s) > 19 {
		return s[:19]
	}
	return s
}

func gitURL(a *opusv1.App) string { return a.GetSource().GetGit().GetUrl() }

// runningRef is what the Ref box of an app's update form starts with:
// what was asked for when the revision it runs was first deployed (a
// rollback asks for that revision's commit; the owner asked for "v1"),
// or, before its first deploy, what its source asks for.
func runningRef(a *opusv1.App) string {
	revs := a.GetRevisions()
	byNumber := func(n int64) *opusv1.Revision {
		for _, r := range revs {
			if r.GetNumber() == n {
				return r
			}
		}
		return nil
	}
	rev := byNumber(a.GetRunningRevision())
	if rev == nil {
		return a.GetRequestedRef()
	}
	// A rollback's revision names the one it returned to, which may be
	// one too; the chain goes back, so it ends (len(revs) bounds it
	// against a record that says otherwise).
	for range revs {
		if rev.GetRollbackOf() == 0 || rev.GetRollbackOf() >= rev.GetNumber() {
			break
		}
		prev := byNumber(rev.GetRollbackOf())
		if prev == nil {
			break
		}
		rev = prev
	}
	return rev.GetRequestedRef()
}

func envText(s *opusv1.Settings) string {
	var keys []string
	for k := range s.GetEnv() {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%s\n", k, s.GetEnv()[k])
	}
	return b.String()
}

func hostsText(s *opusv1.Settings) string { return strings.Join(s.GetHosts(), ", ") }
