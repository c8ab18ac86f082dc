package main

import (
	"testing"

	"github.com/opus-hosting/opus/client/fakeopus"
	opusv1 "github.com/opus-hosting/opus/proto/opus/v1"
)

func TestParseDatabaseProvision(t *testing.T) {
	for _, tc := range []struct {
		raw       string
		provision bool // else a usage error
	}{
		{"provision", true},
		{"Provision", false},
		{"provision ", false},
		{"provisioned", false},
		{"postgresql://provision", false},
	} {
		db, err := parseDatabase(tc.raw)
		if !tc.provision {
			if err == nil || !isUsage(err) {
				t.Errorf("parseDatabase(%q) = %v, %v; want a usage error", tc.raw, db, err)
			}
			continue
		}
		if err != nil || !db.GetProvision() || db.GetEngine() != "postgresql" || db.GetHost()+db.GetName()+db.GetUser()+db.GetPassword() != "" || db.GetPort() != 0 {
			t.Errorf("parseDatabase(%q) = %v, %v", tc.raw, db, err)
		}
	}
}

func TestCreateProvisioned(t *testing.T) {
	s := fakeopus.Start(t)
	r := runCLI(t, s.Socket, "", "create", "tprov", "--database", "provision")
	if r.code != 0 {
		t.Fatalf("create: %+v", r)
	}
	req := s.CallsOf("CreateProject")[0].Req.(*opusv1.CreateProjectRequest)
	if db := req.GetDatabase(); !db.GetProvision() || db.GetEngine() != "postgresql" || db.GetName() != "" {
		t.Errorf("database %v", db)
	}
}
