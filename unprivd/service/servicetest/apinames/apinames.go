// Package apinames finds internal names of the Opus API in text meant for
// people: RPC names, proto field names and paths, service names and
// grpc-go's wrapping, all read from the generated descriptors. Tests of
// opusd's messages and opusctl's output use it.
package apinames

import (
	"regexp"
	"strings"

	"google.golang.org/protobuf/reflect/protoreflect"

	privdv1 "github.com/opus-hosting/opus/proto/opus/privd/v1"
	opusv1 "github.com/opus-hosting/opus/proto/opus/v1"
)

// Patterns match what a message a user reads must not hold: the API's
// and privd's RPC names, their request fields' names with an underscore,
// proto paths of nested fields ("superuser.email", "apps[0].name"), the
// services' full names and grpc-go's "rpc error:" wrapping. A new RPC or
// field is covered as it is added.
func Patterns() []*regexp.Regexp {
	words := map[string]bool{}
	var visit func(md protoreflect.MessageDescriptor, depth int)
	visit = func(md protoreflect.MessageDescriptor, depth int) {
		fs := md.Fields()
		for i := range fs.Len() {
			f := fs.Get(i)
			name := string(f.Name())
			if strings.Contains(name, "_") {
				words[name] = true
			}
			if sub := f.Message(); sub != nil && !f.IsMap() && sub.ParentFile() == md.ParentFile() {
				subFields := sub.Fields()
				for j := range subFields.Len() {
					words[name+"."+string(subFields.Get(j).Name())] = true
				}
				if depth < 4 {
					visit(sub, depth+1)
				}
			}
		}
	}
	for _, fd := range []protoreflect.FileDescriptor{opusv1.File_opus_v1_opus_proto, opusv1.File_opus_v1_console_proto, privdv1.File_opus_privd_v1_privd_proto} {
		svcs := fd.Services()
		for i := range svcs.Len() {
			ms := svcs.Get(i).Methods()
			for j := range ms.Len() {
				words[string(ms.Get(j).Name())] = true
				visit(ms.Get(j).Input(), 0)
			}
		}
	}
	var res []*regexp.Regexp
	for w := range words {
		// A repeated field's path has an index: "apps[0].name".
		q := strings.Replace(regexp.QuoteMeta(w), `\.`, `(\[\d+\])?\.`, 1)
		res = append(res, regexp.MustCompile(`(^|[^A-Za-z0-9_.])`+q+`($|[^A-Za-z0-9_])`))
	}
	for _, s := range []string{"rpc error:", "/opus.", "opus.v1", "opus.privd", "desc ="} {
		res = append(res, regexp.MustCompile(regexp.QuoteMeta(s)))
	}
	return res
}

// Find returns the internal names msg holds, by patterns.
func Find(patterns []*regexp.Regexp, msg string) []string {
	var found []string
	for _, re := range patterns {
		if m := re.FindString(msg); m != "" {
			found = append(found, strings.Trim(m, " \t\n:;,.()[]\"'/"))
		}
	}
	return found
}
