package main

import (
	"testing"

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

// TestCreateProvisioned: opusctl asks for a provisioned database, and
// relays opusd's answer when the host does not provision one.
func TestCreateProvisioned(t *testing.T) {
	s := startOpusd(t)
	r := runCLI(t, s.Socket, "", "create", "tprov", "--empty", "--database", "provision")
	if r.code != exitError || r.stderr != "opusctl: database provisioning: this host does not provision PostgreSQL; the host administrator must set postgres_admin in opus.conf (a connection whose role has CREATEROLE and CREATEDB) and restart opusd, or give the database by its connection parameters\n" {
		t.Errorf("create on a host without provisioning: %+v", r)
	}
	req := s.CallsOf("CreateProject")[0].Req.(*opusv1.CreateProjectRequest)
	if db := req.GetDatabase(); !db.GetProvision() || db.GetEngine() != "postgresql" || db.GetName() != "" {
		t.Errorf("database %v", db)
	}
	if project(t, s, "tprov") != nil {
		t.Error("the refused project was made")
	}
}
