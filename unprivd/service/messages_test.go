package service

import (
	"context"
	"errors"
	"io"
	"regexp"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/reflect/protoreflect"

	opusv1 "github.com/opus-hosting/opus/proto/opus/v1"
	"github.com/opus-hosting/opus/unprivd/service/servicetest/apinames"
)

// internalNames are apinames' patterns, checked to be many.
func internalNames(t testing.TB) []*regexp.Regexp {
	t.Helper()
	res := apinames.Patterns()
	if len(res) < 40 {
		t.Fatalf("only %d internal names found in the descriptors", len(res))
	}
	return res
}

// checkUserMessage fails t when msg holds an internal name.
func checkUserMessage(t testing.TB, names []*regexp.Regexp, what, msg string) {
	t.Helper()
	if msg == "" {
		t.Errorf("%s: empty message", what)
	}
	if found := apinames.Find(names, msg); len(found) > 0 {
		t.Errorf("%s: message names %q, internal names: %s", what, found, msg)
	}
}

// TestInternalNamesCatchOffenders: the check finds the names the API used
// to put in its messages.
func TestInternalNamesCatchOffenders(t *testing.T) {
	names := internalNames(t)
	for _, msg := range []string{
		`project "p" already has an app "a"; use UpdateApp to change its source`,
		"only root and members of the admin group may call /opus.v1.Opus/CheckHost",
		"certificate_pem: is empty",
		"apps[0].name: bad",
		"app.name: bad",
		"superuser.email: bad",
		"rpc error: code = Internal desc = x",
	} {
		bad := false
		for _, re := range names {
			bad = bad || re.MatchString(msg)
		}
		if !bad {
			t.Errorf("%q passes the check", msg)
		}
	}
	for _, msg := range []string{"app name: bad", "superuser e-mail: write it as name@example.com", "use 'opusctl apps update' to change its source"} {
		for _, re := range names {
			if re.MatchString(msg) {
				t.Errorf("%q fails the check (%v)", msg, re)
			}
		}
	}
}

// TestUserMessagesNameNoInternals walks the API's error paths, at least
// one bad request for every RPC of every service opusd serves on its
// socket, as a user who is no admin, and checks that each answer keeps its
// gRPC code and says what is wrong in the user's words: no RPC, proto
// field or service name, no "rpc error:".
func TestUserMessagesNameNoInternals(t *testing.T) {
	s := startServer(t, serverOpt{admins: fakeAdmins{}})
	ctx := context.Background()
	names := internalNames(t)
	cl, sessions := s.client, opusv1.NewConsoleSessionsClient(s.cc)
	git := func(url, ref string) *opusv1.AppSource {
		return &opusv1.AppSource{Kind: &opusv1.AppSource_Git{Git: &opusv1.GitSource{Url: url, Ref: ref}}}
	}
	if _, err := cl.CreateProject(ctx, &opusv1.CreateProjectRequest{Name: "have", Apps: []*opusv1.AppSpec{gitApp("blog", "https://example.com/blog.git")}}); err != nil {
		t.Fatal(err)
	}
	upload := func(msgs ...*opusv1.UploadSourceRequest) error {
		st, err := cl.UploadSource(ctx)
		if err != nil {
			return err
		}
		for _, m := range msgs {
			if err := st.Send(m); err != nil && !errors.Is(err, io.EOF) {
				return err
			}
		}
		_, err = st.CloseAndRecv()
		return err
	}
	watch := func(id string) error {
		st, err := cl.WatchOperation(ctx, &opusv1.WatchOperationRequest{Id: id})
		if err != nil {
			return err
		}
		_, err = st.Recv()
		return err
	}
	type tc struct {
		method string // the RPC's name
		name   string
		code   codes.Code
		call   func() error
	}
	var cases []tc
	add := func(method, name string, code codes.Code, call func() error) {
		cases = append(cases, tc{method, name, code, call})
	}
	create := func(r *opusv1.CreateProjectRequest) func() error {
		return func() error { _, err := cl.CreateProject(ctx, r); return err }
	}
	good := gitApp("blog", "https://example.com/blog.git")
	add("CreateProject", "bad name", codes.InvalidArgument, create(&opusv1.CreateProjectRequest{Name: "Bad Name", Apps: []*opusv1.AppSpec{good}}))
	add("CreateProject", "exists", codes.AlreadyExists, create(&opusv1.CreateProjectRequest{Name: "have", Apps: []*opusv1.AppSpec{good}}))
	add("CreateProject", "bad app name", codes.InvalidArgument, create(&opusv1.CreateProjectRequest{Name: "p1", Apps: []*opusv1.AppSpec{gitApp("Bad-App", "https://example.com/b.git")}}))
	add("CreateProject", "no such host", codes.InvalidArgument, create(&opusv1.CreateProjectRequest{Name: "p1", Host: "elsewhere", Apps: []*opusv1.AppSpec{good}}))
	add("MoveProject", "no host named", codes.InvalidArgument, func() error {
		_, err := cl.MoveProject(ctx, &opusv1.MoveProjectRequest{Name: "have"})
		return err
	})
	add("MoveProject", "one host", codes.FailedPrecondition, func() error {
		_, err := cl.MoveProject(ctx, &opusv1.MoveProjectRequest{Name: "have", To: "web2"})
		return err
	})
	add("CreateProject", "app twice", codes.InvalidArgument, create(&opusv1.CreateProjectRequest{Name: "p1", Apps: []*opusv1.AppSpec{good, good}}))
	add("CreateProject", "no source", codes.InvalidArgument, create(&opusv1.CreateProjectRequest{Name: "p1", Apps: []*opusv1.AppSpec{{Name: "blog"}}}))
	add("CreateProject", "http url", codes.InvalidArgument, create(&opusv1.CreateProjectRequest{Name: "p1", Apps: []*opusv1.AppSpec{{Name: "blog", Source: git("http://example.com/b.git", "")}}}))
	add("CreateProject", "local url", codes.PermissionDenied, create(&opusv1.CreateProjectRequest{Name: "p1", Apps: []*opusv1.AppSpec{{Name: "blog", Source: git("/srv/git/b.git", "")}}}))
	add("CreateProject", "bad ref", codes.InvalidArgument, create(&opusv1.CreateProjectRequest{Name: "p1", Apps: []*opusv1.AppSpec{{Name: "blog", Source: git("https://example.com/b.git", "a..b")}}}))
	add("CreateProject", "bad digest", codes.InvalidArgument, create(&opusv1.CreateProjectRequest{Name: "p1", Apps: []*opusv1.AppSpec{{Name: "blog",
		Source: &opusv1.AppSource{Kind: &opusv1.AppSource_Upload{Upload: &opusv1.UploadedSource{Digest: "sha1:x"}}}}}}))
	add("CreateProject", "unknown digest", codes.InvalidArgument, create(&opusv1.CreateProjectRequest{Name: "p1", Apps: []*opusv1.AppSpec{{Name: "blog",
		Source: &opusv1.AppSource{Kind: &opusv1.AppSource_Upload{Upload: &opusv1.UploadedSource{Digest: "sha256:" + strings.Repeat("ab", 32)}}}}}}))
	add("CreateProject", "superuser e-mail", codes.InvalidArgument, create(&opusv1.CreateProjectRequest{Name: "p1", Apps: []*opusv1.AppSpec{good},
		Superuser: &opusv1.Superuser{Username: "admin", Email: "a@b", Password: "x"}}))
	add("CreateProject", "superuser name", codes.InvalidArgument, create(&opusv1.CreateProjectRequest{Name: "p1", Apps: []*opusv1.AppSpec{good},
		Superuser: &opusv1.Superuser{Username: "a b", Email: "a@example.com", Password: "x"}}))
	add("CreateProject", "superuser password", codes.InvalidArgument, create(&opusv1.CreateProjectRequest{Name: "p1", Apps: []*opusv1.AppSpec{good},
		Superuser: &opusv1.Superuser{Username: "admin", Email: "a@example.com"}}))
	add("CreateProject", "database engine", codes.InvalidArgument, create(&opusv1.CreateProjectRequest{Name: "p1", Apps: []*opusv1.AppSpec{good},
		Database: &opusv1.Database{Engine: "mysql"}}))
	add("CreateProject", "database provisioning", codes.FailedPrecondition, create(&opusv1.CreateProjectRequest{Name: "p1", Apps: []*opusv1.AppSpec{good},
		Database: &opusv1.Database{Engine: "postgresql", Provision: true}}))
	add("CreateProject", "limits at create", codes.InvalidArgument, create(&opusv1.CreateProjectRequest{Name: "p1", Apps: []*opusv1.AppSpec{good},
		Settings: &opusv1.Settings{MemoryBytes: 1 << 30}}))
	add("GetProject", "bad name", codes.InvalidArgument, func() error { _, err := cl.GetProject(ctx, &opusv1.GetProjectRequest{Name: "-x"}); return err })
	add("GetProject", "missing", codes.NotFound, func() error { _, err := cl.GetProject(ctx, &opusv1.GetProjectRequest{Name: "nope"}); return err })
	add("DeleteProject", "missing", codes.NotFound, func() error { _, err := cl.DeleteProject(ctx, &opusv1.DeleteProjectRequest{Name: "nope"}); return err })
	add("AddApp", "already there", codes.AlreadyExists, func() error {
		_, err := cl.AddApp(ctx, &opusv1.AddAppRequest{Project: "have", App: good})
		return err
	})
	add("AddApp", "bad app name", codes.InvalidArgument, func() error {
		_, err := cl.AddApp(ctx, &opusv1.AddAppRequest{Project: "have", App: gitApp("9x", "https://example.com/b.git")})
		return err
	})
	add("AddApp", "no app", codes.InvalidArgument, func() error { _, err := cl.AddApp(ctx, &opusv1.AddAppRequest{Project: "have"}); return err })
	add("RemoveApp", "missing", codes.NotFound, func() error {
		_, err := cl.RemoveApp(ctx, &opusv1.RemoveAppRequest{Project: "have", App: "shop"})
		return err
	})
	add("RemoveApp", "bad app name", codes.InvalidArgument, func() error {
		_, err := cl.RemoveApp(ctx, &opusv1.RemoveAppRequest{Project: "have", App: "Shop!"})
		return err
	})
	add("UpdateApp", "missing", codes.NotFound, func() error {
		_, err := cl.UpdateApp(ctx, &opusv1.UpdateAppRequest{Project: "have", App: "shop", Source: git("https://example.com/s.git", "")})
		return err
	})
	add("UpdateApp", "bad ref", codes.InvalidArgument, func() error {
		_, err := cl.UpdateApp(ctx, &opusv1.UpdateAppRequest{Project: "have", App: "blog", Source: git("https://example.com/b.git", "-x")})
		return err
	})
	add("UpdateApp", "rollback with a source", codes.InvalidArgument, func() error {
		_, err := cl.UpdateApp(ctx, &opusv1.UpdateAppRequest{Project: "have", App: "blog", Rollback: true, Source: git("https://example.com/b.git", "")})
		return err
	})
	add("SetCertificate", "empty", codes.InvalidArgument, func() error {
		_, err := cl.SetCertificate(ctx, &opusv1.SetCertificateRequest{Project: "have"})
		return err
	})
	add("SetCertificate", "no key", codes.InvalidArgument, func() error {
		_, err := cl.SetCertificate(ctx, &opusv1.SetCertificateRequest{Project: "have", CertificatePem: []byte("x")})
		return err
	})
	add("SetCertificate", "garbage", codes.InvalidArgument, func() error {
		_, err := cl.SetCertificate(ctx, &opusv1.SetCertificateRequest{Project: "have", CertificatePem: []byte("x"), KeyPem: []byte("y")})
		return err
	})
	add("UploadSource", "empty stream", codes.InvalidArgument, func() error { return upload() })
	add("UploadSource", "chunk first", codes.InvalidArgument, func() error {
		return upload(&opusv1.UploadSourceRequest{Part: &opusv1.UploadSourceRequest_Chunk{Chunk: []byte("x")}})
	})
	add("UploadSource", "too big", codes.InvalidArgument, func() error {
		return upload(&opusv1.UploadSourceRequest{Part: &opusv1.UploadSourceRequest_Info{Info: &opusv1.UploadInfo{Size: 1 << 40}}})
	})
	add("GetOperation", "bad id", codes.InvalidArgument, func() error { _, err := cl.GetOperation(ctx, &opusv1.GetOperationRequest{Id: "x"}); return err })
	add("GetOperation", "unknown id", codes.NotFound, func() error {
		_, err := cl.GetOperation(ctx, &opusv1.GetOperationRequest{Id: "op-" + strings.Repeat("0", 32)})
		return err
	})
	add("WatchOperation", "bad id", codes.InvalidArgument, func() error { return watch("x") })
	add("ListOperations", "limit", codes.InvalidArgument, func() error {
		_, err := cl.ListOperations(ctx, &opusv1.ListOperationsRequest{Project: "have", Limit: 1 << 20})
		return err
	})
	add("GetLogs", "lines", codes.InvalidArgument, func() error {
		_, err := cl.GetLogs(ctx, &opusv1.GetLogsRequest{Project: "have", Lines: 1 << 20})
		return err
	})
	add("FollowLogs", "lines", codes.InvalidArgument, func() error {
		st, err := cl.FollowLogs(ctx, &opusv1.FollowLogsRequest{Project: "have", Lines: 1 << 20})
		if err != nil {
			return err
		}
		_, err = st.Recv()
		return err
	})
	add("BackupProject", "never deployed", codes.FailedPrecondition, func() error {
		st, err := cl.BackupProject(ctx, &opusv1.BackupProjectRequest{Name: "have"})
		if err != nil {
			return err
		}
		_, err = st.Recv()
		return err
	})
	add("RestoreProject", "not a backup", codes.InvalidArgument, func() error {
		st, err := cl.RestoreProject(ctx)
		if err != nil {
			return err
		}
		st.Send(&opusv1.RestoreProjectRequest{Part: &opusv1.RestoreProjectRequest_Info{Info: &opusv1.RestoreInfo{}}})
		st.Send(&opusv1.RestoreProjectRequest{Part: &opusv1.RestoreProjectRequest_Chunk{Chunk: []byte("not a backup")}})
		_, err = st.CloseAndRecv()
		return err
	})
	add("RestoreProject", "no info", codes.InvalidArgument, func() error {
		st, err := cl.RestoreProject(ctx)
		if err != nil {
			return err
		}
		st.Send(&opusv1.RestoreProjectRequest{Part: &opusv1.RestoreProjectRequest_Chunk{Chunk: []byte("x")}})
		_, err = st.CloseAndRecv()
		return err
	})
	add("RollbackApp", "nothing deployed", codes.FailedPrecondition, func() error {
		_, err := cl.RollbackApp(ctx, &opusv1.RollbackAppRequest{Project: "have", App: "blog", To: "99"})
		return err
	})
	add("RollbackApp", "bad revision", codes.InvalidArgument, func() error {
		_, err := cl.RollbackApp(ctx, &opusv1.RollbackAppRequest{Project: "have", App: "blog", To: "main"})
		return err
	})
	add("RollbackApp", "missing app", codes.NotFound, func() error {
		_, err := cl.RollbackApp(ctx, &opusv1.RollbackAppRequest{Project: "have", App: "shop"})
		return err
	})
	add("UpdateSettings", "nothing", codes.InvalidArgument, func() error {
		_, err := cl.UpdateSettings(ctx, &opusv1.UpdateSettingsRequest{Project: "have"})
		return err
	})
	add("UpdateSettings", "unknown setting", codes.InvalidArgument, func() error {
		_, err := cl.UpdateSettings(ctx, &opusv1.UpdateSettingsRequest{Project: "have", Set: map[string]string{"colour": "red"}})
		return err
	})
	add("UpdateSettings", "limits by a non-admin", codes.PermissionDenied, func() error {
		_, err := cl.UpdateSettings(ctx, &opusv1.UpdateSettingsRequest{Project: "have", Set: map[string]string{"memory": "1G"}})
		return err
	})
	add("UpdateSettings", "bad env name", codes.InvalidArgument, func() error {
		_, err := cl.UpdateSettings(ctx, &opusv1.UpdateSettingsRequest{Project: "have", Set: map[string]string{"env.a-b": "1"}})
		return err
	})
	add("ListProjects", "no error path: the caller's projects, perhaps none", codes.OK, func() error {
		_, err := cl.ListProjects(ctx, &opusv1.ListProjectsRequest{})
		return err
	})
	add("GetDiskUsage", "bad name", codes.InvalidArgument, func() error {
		_, err := cl.GetDiskUsage(ctx, &opusv1.GetDiskUsageRequest{Project: "Bad Name"})
		return err
	})
	add("CheckHost", "not an admin", codes.PermissionDenied, func() error { _, err := cl.CheckHost(ctx, &opusv1.CheckHostRequest{}); return err })
	add("CreateLoginLink", "console off", codes.FailedPrecondition, func() error {
		_, err := cl.CreateLoginLink(ctx, &opusv1.CreateLoginLinkRequest{})
		return err
	})
	add("SetConsolePassword", "too short", codes.InvalidArgument, func() error {
		_, err := cl.SetConsolePassword(ctx, &opusv1.SetConsolePasswordRequest{Password: "x"})
		return err
	})
	add("ListConsoleAccounts", "not an admin", codes.PermissionDenied, func() error {
		_, err := cl.ListConsoleAccounts(ctx, &opusv1.ListConsoleAccountsRequest{})
		return err
	})
	add("DisableConsoleAccount", "not an admin", codes.PermissionDenied, func() error {
		_, err := cl.DisableConsoleAccount(ctx, &opusv1.DisableConsoleAccountRequest{Uid: 1})
		return err
	})
	add("DeleteConsoleAccount", "not an admin", codes.PermissionDenied, func() error {
		_, err := cl.DeleteConsoleAccount(ctx, &opusv1.DeleteConsoleAccountRequest{Uid: 1})
		return err
	})
	add("SignInWithPassword", "on the socket", codes.PermissionDenied, func() error {
		_, err := sessions.SignInWithPassword(ctx, &opusv1.SignInWithPasswordRequest{User: "x", Password: "y"})
		return err
	})
	add("SignInWithLink", "on the socket", codes.PermissionDenied, func() error {
		_, err := sessions.SignInWithLink(ctx, &opusv1.SignInWithLinkRequest{})
		return err
	})
	add("GetConsoleSession", "on the socket", codes.PermissionDenied, func() error {
		_, err := sessions.GetConsoleSession(ctx, &opusv1.GetConsoleSessionRequest{})
		return err
	})
	add("SignOut", "on the socket", codes.PermissionDenied, func() error {
		_, err := sessions.SignOut(ctx, &opusv1.SignOutRequest{})
		return err
	})

	// Every RPC of both services has a case, but those no request to can
	// be wrong.
	noBadRequest := map[string]string{"ListHosts": "takes nothing and is open to every local user"}
	for _, fd := range []protoreflect.FileDescriptor{opusv1.File_opus_v1_opus_proto, opusv1.File_opus_v1_console_proto} {
		for i := range fd.Services().Len() {
			ms := fd.Services().Get(i).Methods()
			for j := range ms.Len() {
				m := string(ms.Get(j).Name())
				if noBadRequest[m] == "" && !slices.ContainsFunc(cases, func(c tc) bool { return c.method == m }) {
					t.Errorf("no bad request for %s", m)
				}
			}
		}
	}
	for _, c := range cases {
		err := c.call()
		what := c.method + ": " + c.name
		if got := status.Code(err); got != c.code {
			t.Errorf("%s: %v, want code %v", what, err, c.code)
			continue
		}
		if c.code != codes.OK {
			t.Logf("%s: %s", what, status.Convert(err).Message())
			checkUserMessage(t, names, what, status.Convert(err).Message())
		}
	}
}
