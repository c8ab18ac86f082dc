package service

import (
	"fmt"
	"regexp"
	"strings"
	"unicode"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// invalid is an InvalidArgument error about one request field. Its message
// names the field in the words opusctl and the console use ("app name:
// ..."), never by its proto path; the path ("apps[0].name") travels in a
// BadRequest detail, for programs (the console puts the message next to
// the form field it concerns).
func invalid(field, format string, args ...any) error {
	return fieldError(codes.InvalidArgument, field, fmt.Sprintf(format, args...))
}

// fieldError is a status of code about field: "WORDS: desc", with the
// field's path in a BadRequest detail.
func fieldError(code codes.Code, field, desc string) error {
	return wordedFieldError(code, field, fieldWords(field), desc)
}

// settingInvalid refuses the setting key of an UpdateSettings' set or
// unset (op): the message is "set: DESC" as before (desc names the
// setting), and the detail's field is op.key (set.hosts, set.env.NAME),
// so a form can put it next to that setting's own field.
func settingInvalid(op, key string, err error) error {
	field := op
	if key != "" {
		field = op + "." + key
	}
	return wordedFieldError(codes.InvalidArgument, field, op, err.Error())
}

// wordedFieldError is fieldError with the field's words given.
func wordedFieldError(code codes.Code, field, words, desc string) error {
	msg := words + ": " + desc
	if w := words; strings.HasPrefix(desc, w+" ") {
		msg = desc // it names the field itself: 'project name "X" contains ...'
	}
	st := status.New(code, msg)
	if d, err := st.WithDetails(&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: field, Description: desc}}}); err == nil {
		st = d
	}
	return st.Err()
}

var fieldIndex = regexp.MustCompile(`\[\d+\]`)

// fieldSuffixWords names request fields by the end of their path, longest
// first: what opusctl's flags and the console's forms call them.
var fieldSuffixWords = []struct{ suffix, words string }{
	{"source.git.url", "git url"},
	{"source.git.ref", "git ref"},
	{"source.upload.digest", "upload"},
	{"superuser.username", "superuser name"},
	{"superuser.email", "superuser e-mail"},
	{"superuser.password", "superuser password"},
	{"settings.env", "environment variable"},
	{"apps.name", "app name"},
	{"app.name", "app name"},
	{"info.size", "upload size"},
	{"database.provision", "database provisioning"},
	{"source", "app source"},
	{"apps", "app"},
	{"info", "upload"},
	{"remote_addr", "remote address"},
	{"project", "project name"},
	{"name", "project name"},
	{"id", "operation id"},
	// RollbackAppRequest.to: opusctl's --to, the revision to go back to.
	{"to", "revision"},
	// RestoreProject's stream: the backup file opusctl or a form sent.
	{"file", "backup file"},
}

// fieldWords is a request field's path in words.
func fieldWords(field string) string {
	path := fieldIndex.ReplaceAllString(field, "")
	for _, s := range fieldSuffixWords {
		if path == s.suffix || strings.HasSuffix(path, "."+s.suffix) {
			return s.words
		}
	}
	return strings.Map(func(r rune) rune {
		if r == '.' || r == '_' {
			return ' '
		}
		return r
	}, path)
}

// methodWords is what a call does, for a refusal: "/opus.v1.Opus/CheckHost"
// is "check host".
func methodWords(fullMethod string) string {
	name := fullMethod[strings.LastIndex(fullMethod, "/")+1:]
	var b strings.Builder
	for i, r := range name {
		if unicode.IsUpper(r) {
			if i > 0 {
				b.WriteByte(' ')
			}
			r = unicode.ToLower(r)
		}
		b.WriteRune(r)
	}
	return b.String()
}
