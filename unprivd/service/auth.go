package service

import (
	"context"
	"errors"
	"log/slog"
	"os/user"
	"slices"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionv1 "google.golang.org/grpc/reflection/grpc_reflection_v1"
	reflectionv1alpha "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
	"google.golang.org/grpc/status"

	"github.com/opus-hosting/opus/internal/peercred"
	opusv1 "github.com/opus-hosting/opus/proto/opus/v1"
	"github.com/opus-hosting/opus/unprivd/store"
)

// access is the rule a method is served under.
type access int

const (
	// accessPublic: any local peer; the method touches no project (health
	// checks, server reflection).
	accessPublic access = iota + 1
	// accessAnyLocal: any local uid; the handler scopes what it does to the
	// caller (creates are owned by the caller, lists show only theirs).
	accessAnyLocal
	// accessOwnerOrAdmin: the handler loads the named project or operation
	// and serves it only to its owner or an admin; to anyone else it does
	// not exist (NotFound), so names of others' projects do not leak.
	accessOwnerOrAdmin
	// accessAdmin: root or a member of the admin group only; refused in
	// the interceptor before the handler runs.
	accessAdmin
	// accessConsole: opusd's own web console only, that is a connection
	// on its in-process listener (peercred.FromInProcess); every socket
	// caller, root and the opus user included, is refused in the
	// interceptor before the handler runs. The console's session calls
	// take secrets (passwords, session ids) and no socket caller needs
	// them: a user signs in with opusctl as themselves.
	accessConsole
)

func (a access) String() string {
	switch a {
	case accessPublic:
		return "public"
	case accessAnyLocal:
		return "any-local"
	case accessOwnerOrAdmin:
		return "owner-or-admin"
	case accessAdmin:
		return "admin"
	case accessConsole:
		return "console"
	}
	return "deny"
}

// methodAccess is the one authorization table of opusd, keyed by full gRPC
// method name. A method missing from it is refused before its handler runs
// (default deny); a test checks that it lists exactly the served methods.
var methodAccess = map[string]access{
	opusv1.Opus_CreateProject_FullMethodName: accessAnyLocal,
	opusv1.Opus_ListProjects_FullMethodName:  accessAnyLocal,
	opusv1.Opus_UploadSource_FullMethodName:  accessAnyLocal,
	// The handler reports the caller's own projects and totals, or, for
	// an admin, everyone's; a named project is checked as GetProject.
	opusv1.Opus_GetDiskUsage_FullMethodName:   accessAnyLocal,
	opusv1.Opus_GetProject_FullMethodName:     accessOwnerOrAdmin,
	opusv1.Opus_DeleteProject_FullMethodName:  accessOwnerOrAdmin,
	opusv1.Opus_AddApp_FullMethodName:         accessOwnerOrAdmin,
	opusv1.Opus_RemoveApp_FullMethodName:      accessOwnerOrAdmin,
	opusv1.Opus_UpdateApp_FullMethodName:      accessOwnerOrAdmin,
	opusv1.Opus_RollbackApp_FullMethodName:    accessOwnerOrAdmin,
	opusv1.Opus_SetCertificate_FullMethodName: accessOwnerOrAdmin,
	opusv1.Opus_GetOperation_FullMethodName:   accessOwnerOrAdmin,
	opusv1.Opus_WatchOperation_FullMethodName: accessOwnerOrAdmin,
	opusv1.Opus_ListOperations_FullMethodName: accessOwnerOrAdmin,
	opusv1.Opus_GetLogs_FullMethodName:        accessOwnerOrAdmin,
	opusv1.Opus_FollowLogs_FullMethodName:     accessOwnerOrAdmin,
	opusv1.Opus_UpdateSettings_FullMethodName: accessOwnerOrAdmin,
	opusv1.Opus_BackupProject_FullMethodName:  accessOwnerOrAdmin,
	opusv1.Opus_MoveProject_FullMethodName:    accessOwnerOrAdmin,
	// A restore makes a project, as CreateProject; over an existing one
	// only the owner's (or an admin's), checked in the handler.
	opusv1.Opus_RestoreProject_FullMethodName: accessAnyLocal,

	opusv1.Opus_CreateLoginLink_FullMethodName:       accessAnyLocal,
	opusv1.Opus_SetConsolePassword_FullMethodName:    accessAnyLocal,
	opusv1.Opus_CheckHost_FullMethodName:             accessAdmin,
	opusv1.Opus_ListHosts_FullMethodName:             accessAnyLocal,
	opusv1.Opus_ListConsoleAccounts_FullMethodName:   accessAdmin,
	opusv1.Opus_DisableConsoleAccount_FullMethodName: accessAdmin,
	opusv1.Opus_DeleteConsoleAccount_FullMethodName:  accessAdmin,

	opusv1.ConsoleSessions_SignInWithPassword_FullMethodName: accessConsole,
	opusv1.ConsoleSessions_SignInWithLink_FullMethodName:     accessConsole,
	opusv1.ConsoleSessions_GetConsoleSession_FullMethodName:  accessConsole,
	opusv1.ConsoleSessions_SignOut_FullMethodName:            accessConsole,

	healthpb.Health_Check_FullMethodName: accessPublic,
	healthpb.Health_List_FullMethodName:  accessPublic,
	healthpb.Health_Watch_FullMethodName: accessPublic,

	reflectionv1.ServerReflection_ServerReflectionInfo_FullMethodName:      accessPublic,
	reflectionv1alpha.ServerReflection_ServerReflectionInfo_FullMethodName: accessPublic,
}

// Admins says who may see and change every project.
type Admins interface {
	IsAdmin(uid uint32) bool
}

// GroupAdmins makes uid 0 and the members of Group admins. Membership is
// read from the user and group databases (os/user), primary group
// included, at each call, so a change to the group takes effect without a
// restart. A Service made by New asks it at most once per uid every
// adminTTL (see adminCache): each answer reads /etc/passwd and all of
// /etc/group, which on a host with a user and a group per project cost
// more than the call it guards.
type GroupAdmins struct {
	Group string
}

// IsAdmin implements Admins.
func (g GroupAdmins) IsAdmin(uid uint32) bool {
	if uid == 0 {
		return true
	}
	if g.Group == "" {
		return false
	}
	grp, err := user.LookupGroup(g.Group)
	if err != nil {
		return false
	}
	u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10))
	if err != nil {
		return false
	}
	if u.Gid == grp.Gid {
		return true
	}
	ids, err := u.GroupIds()
	if err != nil {
		return false
	}
	return slices.Contains(ids, grp.Gid)
}

// adminTTL is how long a Service trusts an answer of GroupAdmins for one
// uid. A change to the admin group reaches opusd within it; a process's
// own supplementary groups do not change before its user logs in again
// anyway.
const adminTTL = 5 * time.Second

// adminCacheMax bounds the uids remembered; when full, all are forgotten.
const adminCacheMax = 1024

// adminCache remembers the answers of an Admins that reads the user and
// group databases, per uid, for adminTTL.
type adminCache struct {
	Admins
	now func() time.Time

	mu sync.Mutex
	m  map[uint32]adminAnswer
}

type adminAnswer struct {
	admin bool
	until time.Time
}

// cacheAdmins puts an adminCache in front of a; only GroupAdmins needs
// one (other implementations, such as tests' fakes, answer from memory).
func cacheAdmins(a Admins, now func() time.Time) Admins {
	if _, ok := a.(GroupAdmins); !ok {
		return a
	}
	return &adminCache{Admins: a, now: now, m: make(map[uint32]adminAnswer)}
}

// IsAdmin implements Admins.
func (c *adminCache) IsAdmin(uid uint32) bool {
	if uid == 0 {
		return true
	}
	now := c.now()
	c.mu.Lock()
	a, ok := c.m[uid]
	c.mu.Unlock()
	if ok && now.Before(a.until) {
		return a.admin
	}
	// Asked without the lock: a slow lookup does not hold up other uids;
	// two concurrent askers for one uid both ask, and agree.
	admin := c.Admins.IsAdmin(uid)
	c.mu.Lock()
	if len(c.m) >= adminCacheMax {
		clear(c.m)
	}
	c.m[uid] = adminAnswer{admin: admin, until: now.Add(adminTTL)}
	c.mu.Unlock()
	return admin
}

// caller is who is calling, decided once per call by the interceptor.
type caller struct {
	uid uint32
	// byName says the state is shared by several hosts (etcd): a uid
	// means a user of one host alone, so owners are known by user name.
	// Not set for an admin, who may see everything anyway.
	byName bool
	// name is the caller's user name on this host, looked up only when
	// byName; "" when no user has uid here.
	name  string
	admin bool
}

type callerKey struct{}

// callerFrom returns the caller the interceptor attached; a handler reached
// without it refuses (default deny).
func callerFrom(ctx context.Context) (caller, error) {
	c, ok := ctx.Value(callerKey{}).(caller)
	if !ok {
		return caller{}, status.Error(codes.Unauthenticated, "no caller identity on this call")
	}
	return c, nil
}

// callerAbout is the caller of a call about one project, whose name (in
// request field field) it checks first.
func callerAbout(ctx context.Context, field, project string) (caller, error) {
	c, err := callerFrom(ctx)
	if err != nil {
		return c, err
	}
	return c, validateProject(field, project)
}

// owns reports whether c may see and change project p.
func (c caller) owns(p *store.Project) bool { return c.mayOwner(p.OwnerUID, p.OwnerName) }

// mayOp reports whether c may see operation op.
func (c caller) mayOp(op *store.Operation) bool { return c.mayOwner(op.OwnerUID, op.OwnerName) }

// mayOwner is the one rule of who may see and change what an owner has:
// an admin, or the owner. Where hosts share the state the owner is the
// user name recorded at create (the same person has the same name on
// every host, not the same uid); a record made before names were kept
// has only the uid, which is compared as on one host.
func (c caller) mayOwner(uid uint32, name string) bool {
	switch {
	case c.admin:
		return true
	case c.byName && name != "":
		return c.name != "" && c.name == name
	}
	return c.uid == uid
}

// authorize applies the table to one call and returns the context handlers
// run with.
func (s *Service) authorize(ctx context.Context, method string) (context.Context, error) {
	cred, err := peercred.FromContext(ctx)
	if err != nil {
		s.log.Warn("refused: no peer credentials", "method", method)
		return nil, status.Error(codes.Unauthenticated, "opusd serves only local Unix socket connections")
	}
	if r := s.cfg.ProjectUIDs; r.Last != 0 && r.Contains(cred.UID) {
		s.log.Warn("refused: a project's user", "uid", cred.UID, "method", method)
		return nil, status.Errorf(codes.PermissionDenied, "uid %d is a project's user (project_uids %s): a project's code may not call Opus", cred.UID, r)
	}
	rule, ok := methodAccess[method]
	if !ok {
		s.log.Warn("refused: method not in access table", "uid", cred.UID, "method", method)
		return nil, status.Errorf(codes.PermissionDenied, "opusd does not serve %q", methodWords(method))
	}
	if rule == accessConsole && !peercred.FromInProcess(ctx) {
		s.log.Warn("refused: the web console's own calls", "uid", cred.UID, "method", method)
		return nil, status.Errorf(codes.PermissionDenied, "%q is served only to opusd's web console, not on the socket; sign in to the console with opusctl web login", methodWords(method))
	}
	c := caller{uid: cred.UID}
	if rule != accessPublic && rule != accessConsole {
		c.admin = s.admins.IsAdmin(cred.UID)
		if s.st.Shared() && !c.admin {
			// An admin may see everything: the name decides nothing.
			c.byName = true
			// "" (no user has the uid here) owns nothing by name.
			if c.name, err = s.st.ConsoleUserName(cred.UID); err != nil {
				s.log.Warn("refused: user database", "uid", cred.UID, "method", method, "err", err)
				return nil, errUserDatabase(cred.UID)
			}
		}
	}
	if rule == accessAdmin && !c.admin {
		s.log.Warn("refused: admins only", "uid", cred.UID, "method", method)
		return nil, status.Errorf(codes.PermissionDenied, "only root and members of the admin group may %s", methodWords(method))
	}
	return context.WithValue(ctx, callerKey{}, c), nil
}

// UnaryInterceptor applies the access table to unary calls.
func (s *Service) UnaryInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		ctx, err := s.authorize(ctx, info.FullMethod)
		if err != nil {
			return nil, err
		}
		resp, err := handler(ctx, req)
		return resp, s.unavailable(ctx, err)
	}
}

// unavailable is err, or when a handler passed on a store error that
// says the state store is unreachable without mapping it (storeErr
// does), the Unavailable a caller can act on.
func (s *Service) unavailable(ctx context.Context, err error) error {
	if _, ok := status.FromError(err); !ok && errors.Is(err, store.ErrUnavailable) {
		return s.storeErr(ctx, err)
	}
	return err
}

// StreamInterceptor applies the access table to streaming calls.
func (s *Service) StreamInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		ctx, err := s.authorize(ss.Context(), info.FullMethod)
		if err != nil {
			return err
		}
		return s.unavailable(ctx, handler(srv, &authedStream{ServerStream: ss, ctx: ctx}))
	}
}

type authedStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (a *authedStream) Context() context.Context { return a.ctx }

// refuse logs a refusal and returns the error the caller sees. For a
// project or operation the caller may not see, that is NotFound, the same
// as for one that does not exist.
func (s *Service) refuse(ctx context.Context, c caller, method, project string, err error) error {
	s.log.LogAttrs(ctx, slog.LevelWarn, "refused", slog.Uint64("uid", uint64(c.uid)),
		slog.String("method", method), slog.String("project", project), slog.String("reason", status.Convert(err).Message()))
	return err
}

// ownerName is the user name recorded as the owner of a project uid makes
// through this host: uid's name here. Where hosts share the state it says
// who owns the project, so a uid without one cannot own a project there;
// on one host the uid does, and a name the user database cannot give is
// left out.
func (s *Service) ownerName(uid uint32) (string, error) {
	name, err := s.st.ConsoleUserName(uid)
	switch {
	case err != nil && s.st.Shared():
		return "", errUserDatabase(uid)
	case err != nil:
		s.log.Warn("owner's user name unknown", "uid", uid, "err", err)
		return "", nil
	case name == "" && s.st.Shared():
		return "", status.Errorf(codes.FailedPrecondition, "uid %d has no user name on this host: on hosts sharing their state a project is owned by its owner's user name; ask the host administrator to add the user", uid)
	}
	return name, nil
}

// errUserDatabase is what a caller sees when the host's user database
// (an NSS source down, say) could not name uid on a shared store.
func errUserDatabase(uid uint32) error {
	return status.Errorf(codes.Unavailable, "opusd could not look up uid %d in this host's user database, which says who owns what on hosts sharing their state; try again, or ask the host administrator to check it", uid)
}
