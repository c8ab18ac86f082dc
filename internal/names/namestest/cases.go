// Package namestest holds the tables of cases every caller of a rule in
// package names is tested against: host names (opusd's settings, privd's
// request checks, privd's vhost renderer), superuser e-mails (opusctl,
// opusd's API, privd's command builder), project names (opusd's API,
// privd's request checks, opusctl's early check, the console's hint) and
// app names (opusd's API). One table per rule, so the callers cannot
// disagree. For tests only; an import test keeps it out of the daemons.
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

// Email is a superuser e-mail address and whether Opus takes it.
type Email struct {
	Addr string
	OK   bool
}

// Emails are the cases of names.ValidateSuperuserEmail, which opusd's API,
// privd's manage.py runner and opusctl all apply. Every OK one is an
// address Django's EmailValidator accepts (names' test checks that
// against the real Django where it is installed).
var Emails = []Email{
	{"me@example.com", true},
	{"first.last+tag@mail.example.org", true},
	{"admin@localhost", true},
	{"x@xn--bcher-kva.example", true},
	{"o'brien_-!#$%&*/=?^`{}|~@a-b.co", true},
	{"a@" + strings.Repeat("a", 63) + ".com", true},
	{strings.Repeat("a", 64) + "@" + strings.Repeat(strings.Repeat("b", 62)+".", 3) + "com", false}, // 255 bytes
	{"", false},
	{"admin", false},
	{"a@b", false}, // Django refuses: no dot in the domain
	{"a@b.c", false},
	{"@example.com", false},
	{"a@", false},
	{"a@@example.com", false},
	{"a..b@example.com", false},
	{".a@example.com", false},
	{"a.@example.com", false},
	{"a@-example.com", false},
	{"a@example-.com", false},
	{"a@example..com", false},
	{"a@example.com.", false},
	{"a b@example.com", false},
	{"a@example.com\n", false},
	{"a@example.com\x00", false},
	{`"quoted"@example.com`, false},
	{"a@[127.0.0.1]", false},
	{"ü@example.com", false},
	{"a@exämple.com", false},
	{"a@" + strings.Repeat("a", 64) + ".com", false},
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
