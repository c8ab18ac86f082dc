package store

import (
	"go/ast"
	"go/parser"
	"go/token"
	"slices"
	"strconv"
	"testing"
)

// TestListsHoldEveryConstant: Phases and OpKinds list every constant of
// their type declared in records.go, so that a new phase or kind is not
// missing where they are enumerated (opusd's metrics).
func TestListsHoldEveryConstant(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), "records.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	declared := map[string][]string{}
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.CONST {
			continue
		}
		for _, spec := range g.Specs {
			v := spec.(*ast.ValueSpec)
			id, ok := v.Type.(*ast.Ident)
			if !ok || len(v.Values) != 1 {
				continue
			}
			lit, ok := v.Values[0].(*ast.BasicLit)
			if !ok {
				continue
			}
			s, err := strconv.Unquote(lit.Value)
			if err != nil {
				t.Fatal(err)
			}
			declared[id.Name] = append(declared[id.Name], s)
		}
	}
	var phases, kinds []string
	for _, p := range Phases {
		phases = append(phases, string(p))
	}
	for _, k := range OpKinds {
		kinds = append(kinds, string(k))
	}
	for typ, list := range map[string][]string{"Phase": phases, "OpKind": kinds} {
		want := declared[typ]
		if len(want) == 0 {
			t.Fatalf("no %s constants found in records.go", typ)
		}
		slices.Sort(want)
		got := slices.Sorted(slices.Values(list))
		if !slices.Equal(got, want) {
			t.Errorf("%s list %q; records.go declares %q", typ, got, want)
		}
	}
}
