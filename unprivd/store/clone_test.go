package store

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

var timeType = reflect.TypeFor[time.Time]()

// fill sets every field of v, recursively through structs, pointers,
// slices (two elements), maps (two entries) and arrays, to a value that
// is not zero and depends on seed, so two fills with one seed are equal
// and a field a copy dropped shows. A kind it does not know fails the
// test: teach it (and Clone) the new kind.
func fill(t *testing.T, v reflect.Value, path string, seed *int) {
	t.Helper()
	*seed++
	n := *seed
	if v.Type() == timeType {
		v.Set(reflect.ValueOf(time.Date(2026, 1, 1, 0, 0, n, 0, time.UTC)))
		return
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(fmt.Sprintf("s%d", n))
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(int64(n))
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(uint64(n % 200))
	case reflect.Struct:
		for i := range v.NumField() {
			fill(t, v.Field(i), path+"."+v.Type().Field(i).Name, seed)
		}
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		fill(t, v.Elem(), "(*"+path+")", seed)
	case reflect.Slice:
		v.Set(reflect.MakeSlice(v.Type(), 2, 2))
		for i := range 2 {
			fill(t, v.Index(i), fmt.Sprintf("%s[%d]", path, i), seed)
		}
	case reflect.Array:
		for i := range v.Len() {
			fill(t, v.Index(i), fmt.Sprintf("%s[%d]", path, i), seed)
		}
	case reflect.Map:
		v.Set(reflect.MakeMap(v.Type()))
		for range 2 {
			k := reflect.New(v.Type().Key()).Elem()
			fill(t, k, path+"{key}", seed)
			e := reflect.New(v.Type().Elem()).Elem()
			fill(t, e, path+"{value}", seed)
			v.SetMapIndex(k, e)
		}
	default:
		t.Fatalf("%s: fill does not know kind %s; teach it, and Project.Clone", path, v.Kind())
	}
}

// filledProject is a Project with every field set (see fill).
func filledProject(t *testing.T) *Project {
	t.Helper()
	p := new(Project)
	seed := 0
	fill(t, reflect.ValueOf(p).Elem(), "Project", &seed)
	return p
}

// shared lists the paths at which a and b (of one type) share memory: the
// same backing array of a non-empty slice, the same map, the same pointer.
// Strings are immutable and time.Time's location is never changed, so
// both may be shared.
func shared(a, b reflect.Value, path string) []string {
	if a.Type() == timeType {
		return nil
	}
	switch a.Kind() {
	case reflect.Struct:
		var out []string
		for i := range a.NumField() {
			out = append(out, shared(a.Field(i), b.Field(i), path+"."+a.Type().Field(i).Name)...)
		}
		return out
	case reflect.Pointer, reflect.Map:
		switch {
		case a.IsNil() || b.IsNil():
			return nil
		case a.Pointer() == b.Pointer():
			return []string{path}
		case a.Kind() == reflect.Pointer:
			return shared(a.Elem(), b.Elem(), "(*"+path+")")
		}
		var out []string
		for _, k := range a.MapKeys() {
			if bv := b.MapIndex(k); bv.IsValid() {
				out = append(out, shared(a.MapIndex(k), bv, fmt.Sprintf("%s[%v]", path, k))...)
			}
		}
		return out
	case reflect.Slice, reflect.Array:
		if a.Kind() == reflect.Slice && a.Cap() > 0 && b.Cap() > 0 && a.Pointer() == b.Pointer() {
			return []string{path}
		}
		var out []string
		for i := range min(a.Len(), b.Len()) {
			out = append(out, shared(a.Index(i), b.Index(i), fmt.Sprintf("%s[%d]", path, i))...)
		}
		return out
	}
	return nil
}

// scribble changes, in place, every value reachable from v: each string,
// number, bool and time, the elements of every slice and array, the
// values of every map (and adds an entry to each), what every pointer
// points to. Whatever shares memory with v changes with it.
func scribble(v reflect.Value) {
	if v.Type() == timeType {
		v.Set(reflect.ValueOf(v.Interface().(time.Time).Add(time.Hour)))
		return
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(v.String() + "!")
	case reflect.Bool:
		v.SetBool(!v.Bool())
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(v.Int() + 1)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(v.Uint() + 1)
	case reflect.Struct:
		for i := range v.NumField() {
			scribble(v.Field(i))
		}
	case reflect.Pointer:
		if !v.IsNil() {
			scribble(v.Elem())
		}
	case reflect.Slice, reflect.Array:
		for i := range v.Len() {
			scribble(v.Index(i))
		}
	case reflect.Map:
		if v.IsNil() {
			return
		}
		keys := v.MapKeys()
		for _, k := range keys {
			e := reflect.New(v.Type().Elem()).Elem()
			e.Set(v.MapIndex(k))
			scribble(e)
			v.SetMapIndex(k, e)
		}
		if len(keys) > 0 {
			k := reflect.New(v.Type().Key()).Elem()
			k.Set(keys[0])
			scribble(k)
			v.SetMapIndex(k, reflect.New(v.Type().Elem()).Elem())
		}
	}
}

// TestCloneIsDeep: Clone copies every field of a Project (all of them
// set, at every depth) and shares no slice, map or pointer with it, so
// changing the copy in any way leaves the original as it was. A field
// added to a record type without its copy in clone.go fails here.
func TestCloneIsDeep(t *testing.T) {
	orig, want := filledProject(t), filledProject(t)
	c := orig.Clone()
	if !reflect.DeepEqual(c, orig) {
		t.Fatalf("Clone differs from its original:\n got %+v\nwant %+v", c, orig)
	}
	if paths := shared(reflect.ValueOf(c), reflect.ValueOf(orig), "Project"); len(paths) > 0 {
		t.Fatalf("Clone shares memory with its original at:\n\t%s", strings.Join(paths, "\n\t"))
	}
	scribble(reflect.ValueOf(c))
	if reflect.DeepEqual(c, want) {
		t.Fatal("scribble changed nothing: this test would prove nothing")
	}
	if !reflect.DeepEqual(orig, want) {
		t.Fatalf("changing the clone changed the original:\n got %+v\nwant %+v", orig, want)
	}
	if (*Project)(nil).Clone() != nil {
		t.Fatal("Clone of nil is not nil")
	}
}

// TestCloneKeepsEmptyAndNil: a copy is what decoding the same record
// again would give, empty slices and maps as well as absent ones.
func TestCloneKeepsEmptyAndNil(t *testing.T) {
	for _, p := range []*Project{
		{},
		{Spec: Spec{Apps: []AppSpec{}, DropAppData: []string{}, Settings: Settings{Hosts: []string{}, Env: map[string]string{}},
			Certificate: &OwnerCertificate{CertificatePEM: []byte{}}},
			Status: Status{Apps: map[string]AppStatus{"a": {Revisions: []Revision{}}}}},
	} {
		if c := p.Clone(); !reflect.DeepEqual(c, p) {
			t.Errorf("Clone(%+v) = %+v", p, c)
		}
	}
}

// TestReadRecordsAreOwned: every read hands out a record its caller owns.
// Whatever a caller does to one — every value changed in place, an app
// appended, a nested source, revision or secret changed — the next read,
// served from the decode cache, is still what is stored: through Project,
// Projects and EachProject, in read-only and writing transactions.
func TestReadRecordsAreOwned(t *testing.T) {
	ctx := context.Background()
	s, _ := openTemp(t)
	p := filledProject(t)
	p.Name = "blog"
	if err := s.Update(ctx, func(tx *Tx) error { return tx.CreateProject(p) }); err != nil {
		t.Fatal(err)
	}
	// What is stored, decoded afresh: the cache plays no part in it.
	var want *Project
	if err := s.View(ctx, func(tx *Tx) (err error) {
		want, err = decodeProject([]byte("blog"), tx.kv.get(bucketProjects, []byte("blog")))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if read(t, s, "blog"); cached(s, "blog") == nil {
		t.Fatal("the record is not in the decode cache: this test would prove nothing")
	}
	var appName string // a key of Status.Apps
	for appName = range want.Status.Apps {
		break
	}
	changes := []struct {
		name   string
		change func(p *Project)
	}{
		{"every value in place", func(p *Project) { scribble(reflect.ValueOf(p)) }},
		{"app appended", func(p *Project) { p.Spec.Apps = append(p.Spec.Apps, AppSpec{Name: "shop"}) }},
		{"git ref", func(p *Project) { p.Spec.Apps[0].Git.Ref = "changed" }},
		{"uploader", func(p *Project) { *p.Spec.Apps[1].Upload.UploaderUID++ }},
		{"revision", func(p *Project) { p.Status.Apps[appName].Revisions[0].Resolved = "changed" }},
		{"status app", func(p *Project) { p.Status.Apps["shop"] = AppStatus{} }},
		{"env", func(p *Project) { p.Spec.Settings.Env["TZ"] = "changed" }},
		{"host", func(p *Project) { p.Spec.Settings.Hosts[0] = "changed.example.com" }},
		{"key", func(p *Project) { p.Spec.Certificate.KeyPEM[0]++ }},
		{"secret", func(p *Project) { p.Secrets.SecretKey = "changed" }},
	}
	reads := []struct {
		name string
		read func(t *testing.T, change func(*Project))
	}{
		{"GetProject", func(t *testing.T, change func(*Project)) { change(read(t, s, "blog")) }},
		{"ListProjects", func(t *testing.T, change func(*Project)) {
			ps, err := s.ListProjects(ctx)
			if err != nil || len(ps) != 1 {
				t.Fatalf("ListProjects = %d projects, %v", len(ps), err)
			}
			change(ps[0])
		}},
		{"EachProject", func(t *testing.T, change func(*Project)) {
			n := 0
			err := s.View(ctx, func(tx *Tx) error {
				return tx.EachProject(func(p Project) error { n++; change(&p); return nil })
			})
			if err != nil || n != 1 {
				t.Fatalf("EachProject = %d projects, %v", n, err)
			}
		}},
		{"EachProjectOwnedBy", func(t *testing.T, change func(*Project)) {
			n := 0
			err := s.View(ctx, func(tx *Tx) error {
				return tx.EachProjectOwnedBy(want.OwnerUID, func(p Project) error { n++; change(&p); return nil })
			})
			if err != nil || n != 1 {
				t.Fatalf("EachProjectOwnedBy = %d projects, %v", n, err)
			}
		}},
		{"Project in a write", func(t *testing.T, change func(*Project)) {
			boom := errors.New("rolled back")
			err := s.Update(ctx, func(tx *Tx) error {
				p, err := tx.Project("blog")
				if err != nil {
					return err
				}
				change(p)
				return boom
			})
			if !errors.Is(err, boom) {
				t.Fatal(err)
			}
		}},
	}
	for _, r := range reads {
		for _, c := range changes {
			t.Run(r.name+"/"+c.name, func(t *testing.T) {
				r.read(t, c.change)
				if got := read(t, s, "blog"); !reflect.DeepEqual(got, want) {
					t.Fatalf("after a caller changed its record, the next read =\n%+v\nwant\n%+v", got, want)
				}
			})
		}
	}
}

// TestEachProject: every project in name order, or only an owner's; the
// first error of fn ends the walk and is returned.
func TestEachProject(t *testing.T) {
	ctx := context.Background()
	s, _ := openTemp(t)
	for i, name := range []string{"delta", "alpha", "charlie", "bravo"} {
		createProject(t, s, name, uint32(1000+i%2))
	}
	stop := errors.New("stop")
	for _, tc := range []struct {
		name    string
		walk    func(tx *Tx, fn func(Project) error) error
		stopAt  string
		want    []string
		wantErr error
	}{
		{"all", (*Tx).EachProject, "", []string{"alpha", "bravo", "charlie", "delta"}, nil},
		{"owner 1000", func(tx *Tx, fn func(Project) error) error { return tx.EachProjectOwnedBy(1000, fn) }, "", []string{"charlie", "delta"}, nil},
		{"owner 1001", func(tx *Tx, fn func(Project) error) error { return tx.EachProjectOwnedBy(1001, fn) }, "", []string{"alpha", "bravo"}, nil},
		{"nobody's", func(tx *Tx, fn func(Project) error) error { return tx.EachProjectOwnedBy(7, fn) }, "", nil, nil},
		{"stopped", (*Tx).EachProject, "bravo", []string{"alpha", "bravo"}, stop},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Twice: decoded, then from the cache.
			for range 2 {
				var got []string
				err := s.View(ctx, func(tx *Tx) error {
					return tc.walk(tx, func(p Project) error {
						got = append(got, p.Name)
						if p.Name == tc.stopAt {
							return stop
						}
						return nil
					})
				})
				if !errors.Is(err, tc.wantErr) || !slices.Equal(got, tc.want) {
					t.Fatalf("walk = %v, %v; want %v, %v", got, err, tc.want, tc.wantErr)
				}
			}
		})
	}
}
