// Package namestest holds the tables of names every caller of a rule in
// package names is tested against: host names (opusd's settings, privd's
// request checks, privd's vhost renderer), project names (opusd's API,
// privd's request checks, opusctl's early check, the console's hint) and
// app names (opusd's API, opusctl). One table per rule, so the callers
// cannot disagree. For tests only; an import test keeps it out of the
// daemons.
package namestest

import "strings"

// Host is a host name and whether Opus serves it.
type Host struct {
	Name string
	OK   bool
}

// Hosts are the cases.
var Hosts = []Host{
	{"example.com", true},
	{"www.example.com", true},
	{"localhost", true},
	{"a-b.c0", true},
	{"xn--bcher-kva.example", true},
	{strings.Repeat("a", 63) + "." + strings.Repeat("a", 63), true},
	{strings.Repeat(strings.Repeat("a", 63)+".", 4)[:254], false},
	{strings.Repeat("a", 64) + ".com", false},
	{"", false},
	{"Example.com", false},
	{"-a.com", false},
	{"a-.com", false},
	{"a..com", false},
	{".a.com", false},
	{"a.com.", false},
	{"*.example.com", false},
	{"a.com\nInclude /etc/shadow", false},
	{"a.com b.com", false},
	{"a_b.com", false},
	{"ex\u00e4mple.com", false},
	{`a.example"`, false},
}

// Name is a project or app name, and why the rule refuses it: a part of
// the message, "" when the name is valid.
type Name struct {
	Name string
	Why  string
}

// OK says whether the rule accepts the name.
func (n Name) OK() bool { return n.Why == "" }

// Projects are the cases of names.ValidateProject (MaxProject is 24).
var Projects = []Name{
	{"demo", ""},
	{"blog2", ""},
	{"a", ""},
	{strings.Repeat("a", 24), ""},
	{"", "empty"},
	{strings.Repeat("a", 25), "at most 24"},
	{strings.Repeat("a", 40), "at most 24"},
	{"Root", "contains 'R'"},
	{"a b", "contains ' '"},
	{"../x", "contains '.'"},
	{"my-blog", "contains '-'"},
	{"my_blog", "contains '_'"},
	{"2blog", "starts with a digit"},
	{"blög", "only lowercase"},
	{"café", "only lowercase"},
	{"x\ny", "contains '\\n'"},
	{"class", "Python keyword"},
	{"django", "reserved"},
	{"os", "reserved"},
	{"site", "reserved"},
	{"test", "reserved"},
}

// Apps are the cases of names.ValidateAppName (MaxAppName is 64).
var Apps = []Name{
	{"blog", ""},
	{"_private", ""},
	{"shop2", ""},
	{"my_app", ""},
	{strings.Repeat("a", 64), ""},
	{"", "empty"},
	{strings.Repeat("a", 65), "at most 64"},
	{"2fast", "starts with a digit"},
	{"Blog", "uppercase letter 'B'"},
	{"my-app", `contains '-'`},
	{"blog.views", `contains '.'`},
	{"café", "contains"},
	{"a/b", "contains '/'"},
	{"class", "Python keyword"},
	{"match", "Python keyword"},
	{"__init__", "two underscores"},
	{"django", "would shadow"},
	{"opus_project", "would shadow"},
	{"os", "would shadow"},
	{"json", "would shadow"},
	{"tests", "would shadow"},
	{"wsgi", "would shadow"},
}
