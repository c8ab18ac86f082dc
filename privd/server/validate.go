package server

import (
	"fmt"

	"github.com/opus-hosting/opus/internal/config"
	"github.com/opus-hosting/opus/internal/names"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	privdv1 "github.com/opus-hosting/opus/proto/opus/privd/v1"
)

// Bounds on request fields. privd checks them itself, whatever opusd did.
const (
	maxAliases     = 32
	maxProcesses   = 32
	maxThreads     = 100
	maxPEM         = 64 << 10
	maxCommands    = 8
	maxUsername    = 150
	maxPassword    = 4096
	maxMigrateArg  = 100
	maxTailLogLine = 1000
)

func invalid(field, format string, args ...any) error {
	return status.Errorf(codes.InvalidArgument, "%s: %s", field, fmt.Sprintf(format, args...))
}

func validateInstallSite(req *privdv1.InstallSiteRequest) error {
	if err := validateSiteNames(req.GetProject(), req.GetAliases()); err != nil {
		return err
	}
	if n := len(req.GetCertificatePem()); n == 0 || n > maxPEM {
		return invalid("certificate_pem", "is %d bytes; want 1 to %d", n, maxPEM)
	}
	// No key: the certificate is for a key privd made (CertificateRequest).
	if n := len(req.GetKeyPem()); n > maxPEM {
		return invalid("key_pem", "is %d bytes; want at most %d", n, maxPEM)
	}
	return nil
}

func validateCertificateRequest(req *privdv1.CertificateRequestRequest) error {
	return validateSiteNames(req.GetProject(), req.GetAliases())
}

// validateSiteNames checks a site's project and aliases, as both calls
// that name them need.
func validateSiteNames(project string, aliases []string) error {
	if err := validateProject(project); err != nil {
		return err
	}
	if n := len(aliases); n > maxAliases {
		return invalid("aliases", "%d given; at most %d are allowed", n, maxAliases)
	}
	for i, a := range aliases {
		if err := names.ValidateHostName(a); err != nil {
			return invalid(fmt.Sprintf("aliases[%d]", i), "%v", err)
		}
	}
	return nil
}

func validateEnsureBackend(req *privdv1.EnsureBackendRequest) error {
	if err := validateProject(req.GetProject()); err != nil {
		return err
	}
	if p := req.GetProcesses(); p > maxProcesses {
		return invalid("processes", "%d; at most %d", p, maxProcesses)
	}
	if t := req.GetThreads(); t > maxThreads {
		return invalid("threads", "%d; at most %d", t, maxThreads)
	}
	if req.GetMemoryBytes() > config.MaxBackendMemory || req.GetTasks() > config.MaxBackendTasks || req.GetCpuPercent() > config.MaxBackendCPU {
		return invalid("limits", "memory %d, tasks %d, cpu %d: beyond what privd allows", req.GetMemoryBytes(), req.GetTasks(), req.GetCpuPercent())
	}
	l := config.BackendLimits{MemoryBytes: int64(req.GetMemoryBytes()), Tasks: int(req.GetTasks()), CPUPercent: int(req.GetCpuPercent())}
	if err := l.Validate(""); err != nil {
		return invalid("limits", "%v", err)
	}
	return nil
}

func validateRunManage(req *privdv1.RunManageRequest) error {
	if err := validateProject(req.GetProject()); err != nil {
		return err
	}
	cmds := req.GetCommands()
	if len(cmds) == 0 || len(cmds) > maxCommands {
		return invalid("commands", "%d given; want 1 to %d", len(cmds), maxCommands)
	}
	superuser := false
	for i, c := range cmds {
		switch c {
		case privdv1.ManageCommand_MANAGE_COMMAND_MIGRATE, privdv1.ManageCommand_MANAGE_COMMAND_CHECK,
			privdv1.ManageCommand_MANAGE_COMMAND_COLLECTSTATIC:
		case privdv1.ManageCommand_MANAGE_COMMAND_CREATESUPERUSER:
			superuser = true
		default:
			return invalid(fmt.Sprintf("commands[%d]", i), "%v is not an allowed command", c)
		}
	}
	if n := len(req.GetSuperuserUsername()); n > maxUsername*4 { // runes may take 4 bytes
		return invalid("superuser_username", "is %d bytes long", n)
	}
	if n := len(req.GetSuperuserEmail()); n > names.MaxSuperuserEmail {
		return invalid("superuser_email", "is %d bytes long; at most %d", n, names.MaxSuperuserEmail)
	}
	if n := len(req.GetSuperuserPassword()); n > maxPassword {
		return invalid("superuser_password", "is %d bytes long; at most %d", n, maxPassword)
	}
	if superuser && (req.GetSuperuserUsername() == "" || req.GetSuperuserPassword() == "") {
		return invalid("superuser_username", "CREATESUPERUSER needs superuser_username and superuser_password")
	}
	for field, v := range map[string]string{"migrate_app": req.GetMigrateApp(), "migrate_target": req.GetMigrateTarget()} {
		if len(v) > maxMigrateArg {
			return invalid(field, "is %d bytes long; at most %d", len(v), maxMigrateArg)
		}
		for _, r := range v {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_') {
				return invalid(field, "%q contains %q; only letters, digits and '_' are allowed", v, r)
			}
		}
	}
	if req.GetMigrateTarget() != "" && req.GetMigrateApp() == "" {
		return invalid("migrate_target", "needs migrate_app")
	}
	return nil
}

func validateTailLog(req *privdv1.TailLogRequest) error {
	if err := validateProject(req.GetProject()); err != nil {
		return err
	}
	if n := req.GetLines(); n < 0 || n > maxTailLogLine {
		return invalid("lines", "%d; want 0 (for 100) to %d", n, maxTailLogLine)
	}
	if off := req.GetAfter().GetOffset(); off < 0 {
		return invalid("after.offset", "%d; want a byte offset, 0 or more", off)
	}
	return nil
}
