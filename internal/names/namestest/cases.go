// Package namestest is the table of host names every caller of
// names.ValidateHostName is tested against (opusd's settings, privd's
// request checks, privd's vhost renderer): one table, so they cannot
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
