package layout

import "testing"

func TestFor(t *testing.T) {
	p := For("/var/lib/opus", "blog")
	want := Project{
		Root:    "/var/lib/opus/projects/blog",
		Code:    "/var/lib/opus/projects/blog/code",
		Secrets: "/var/lib/opus/projects/blog/secrets",
		Data:    "/var/lib/opus/projects/blog/data",
		Static:  "/var/lib/opus/projects/blog/static",
	}
	if p != want {
		t.Fatalf("For = %+v, want %+v", p, want)
	}
	if p.WSGI() != "/var/lib/opus/projects/blog/code/wsgi.py" || p.Manage() != "/var/lib/opus/projects/blog/code/manage.py" {
		t.Fatalf("WSGI %q Manage %q", p.WSGI(), p.Manage())
	}
}
