#!/bin/sh
# make install / make uninstall: binaries, units, the default config, and
# (when installing onto this machine, DESTDIR empty, as root) the opus user,
# the admin group and the state directory. Reads PREFIX and DESTDIR from the
# environment.
#
# On this machine, install records in /etc/opus/.install-created each thing
# it created (an account, a directory, the default config) the moment it
# creates it, and uninstall removes only what that record names: an opus
# user, admin group or /etc/opus the host had before `make install` (made by
# the demo, a package, an admin) is never deleted by `make uninstall`.
set -eu
cd "$(dirname "$0")/.."
PREFIX=${PREFIX:-/usr/local}
DESTDIR=${DESTDIR:-}
UNITDIR=${UNITDIR:-/etc/systemd/system}
bin="$DESTDIR$PREFIX/bin"
sbin="$DESTDIR$PREFIX/sbin"
units="$DESTDIR$UNITDIR"
conf="$DESTDIR/etc/opus"
doc="$DESTDIR$PREFIX/share/doc/opus"
state=/var/lib/opus
record="$conf/.install-created"
# systemd wants absolute ExecStart= paths, so PREFIX must be absolute.
case "$PREFIX" in
/*) ;;
*) echo "$0: PREFIX must be an absolute path, not '$PREFIX'" >&2; exit 2 ;;
esac
# PREFIX goes into a sed replacement: escape what sed would interpret there.
prefix_sed=$(printf '%s\n' "$PREFIX" | sed 's/[\\|&]/\\&/g')

# onhost: installing onto this machine as root (not into a DESTDIR tree).
onhost() { [ -z "$DESTDIR" ] && [ "$(id -u)" = 0 ]; }
# created WHAT: append WHAT to the record (host installs only).
created() { if onhost; then echo "$1" >>"$record"; fi; }
# recorded WHAT: the record says install created WHAT.
recorded() { [ -f "$record" ] && grep -qxF "$1" "$record"; }

case "${1:-install}" in
install)
	[ -d "$conf" ] || { install -d "$conf"; created conf-dir; }
	install -d "$bin" "$sbin" "$units" "$doc"
	install -m 0755 bin/opusctl "$bin/opusctl"
	install -m 0755 bin/opusd "$sbin/opusd"
	install -m 0755 bin/opus-privd "$sbin/opus-privd"
	for u in opusd.service opusd.socket opus-privd.service opus-privd.socket opus-backend@.service; do
		sed "s|/usr/local/|$prefix_sed/|g" "systemd/$u" >"$units/$u"
		chmod 0644 "$units/$u"
	done
	[ -f "$conf/opus.conf" ] || { install -m 0644 systemd/opus.conf "$conf/opus.conf"; created conf; }
	install -m 0644 README.md "$doc/README.md"
	if onhost; then
		getent group opus-admin >/dev/null || { groupadd --system opus-admin; created admin-group; }
		getent passwd opus >/dev/null || {
			useradd --system --no-create-home --home-dir "$state" --shell /usr/sbin/nologin --user-group opus
			created user
		}
		[ -d "$state" ] || { install -d -o opus -g opus -m 0755 "$state"; created state-dir; }
		command -v systemctl >/dev/null && [ -d /run/systemd/system ] && systemctl daemon-reload || true
	fi
	echo "installed into ${DESTDIR:-/} (PREFIX=$PREFIX)"
	;;
uninstall)
	rm -f "$bin/opusctl" "$sbin/opusd" "$sbin/opus-privd"
	for u in opusd.service opusd.socket opus-privd.service opus-privd.socket opus-backend@.service; do rm -f "$units/$u"; done
	rm -rf "$doc"
	if onhost; then
		# Only what install created; state a daemon wrote is kept. What
		# could not be removed stays in the record, so that a later
		# uninstall tries again.
		left=""
		keep() { left="$left$1
"; }
		if recorded state-dir && [ -d "$state" ]; then
			rmdir "$state" 2>/dev/null || { echo "keeping $state: it holds Opus state (remove it by hand, then run make uninstall again)" >&2; keep state-dir; }
		fi
		# The user goes only with its state: a uid-less /var/lib/opus
		# (store, secrets, sources) would belong to whichever system
		# user gets that uid next.
		if recorded user && getent passwd opus >/dev/null; then
			if [ -d "$state" ]; then
				echo "keeping the opus user: $state still exists and is its" >&2; keep user
			elif ! userdel opus; then
				echo "could not delete the opus user (is opusd still running?)" >&2; keep user
			fi
		fi
		if recorded user && ! getent passwd opus >/dev/null && getent group opus >/dev/null; then
			groupdel opus || keep user
		fi
		if recorded admin-group && getent group opus-admin >/dev/null; then
			groupdel opus-admin || { echo "could not delete the opus-admin group" >&2; keep admin-group; }
		fi
		# The config is the admin's; remove it only if install put it
		# there and it is still the default.
		if recorded conf && [ -f "$conf/opus.conf" ]; then
			if cmp -s systemd/opus.conf "$conf/opus.conf"; then rm -f "$conf/opus.conf"; else keep conf; fi
		fi
		recorded conf-dir && keep conf-dir
		if [ "$left" = "conf-dir
" ] || [ -z "$left" ]; then
			rm -f "$record"
			[ -z "$left" ] || rmdir "$conf" 2>/dev/null || true
		else
			printf '%s' "$left" >"$record"
		fi
	else
		# A DESTDIR tree is all install's: the config goes unless edited.
		if [ -f "$conf/opus.conf" ] && cmp -s systemd/opus.conf "$conf/opus.conf"; then
			rm -f "$conf/opus.conf"
			rmdir "$conf" 2>/dev/null || true
		fi
	fi
	echo "uninstalled from ${DESTDIR:-/}"
	;;
*)
	echo "usage: $0 install|uninstall" >&2
	exit 2
	;;
esac
