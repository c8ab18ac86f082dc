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
