#!/bin/sh
# make install / make uninstall: binaries, units, the default config, and
# (when installing onto this machine, DESTDIR empty, as root) the opus user
# and the admin group. Reads PREFIX and DESTDIR from the environment.
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
# systemd wants absolute ExecStart= paths, so PREFIX must be absolute.
case "$PREFIX" in
/*) ;;
*) echo "$0: PREFIX must be an absolute path, not '$PREFIX'" >&2; exit 2 ;;
esac
# PREFIX goes into a sed replacement: escape what sed would interpret there.
prefix_sed=$(printf '%s\n' "$PREFIX" | sed 's/[\\|&]/\\&/g')

case "${1:-install}" in
install)
	install -d "$bin" "$sbin" "$units" "$conf" "$doc"
	install -m 0755 bin/opusctl "$bin/opusctl"
	install -m 0755 bin/opusd "$sbin/opusd"
	install -m 0755 bin/opus-privd "$sbin/opus-privd"
	for u in opusd.service opusd.socket opus-privd.service opus-privd.socket; do
		sed "s|/usr/local/|$prefix_sed/|g" "systemd/$u" >"$units/$u"
		chmod 0644 "$units/$u"
	done
	[ -f "$conf/opus.conf" ] || install -m 0644 systemd/opus.conf "$conf/opus.conf"
	install -m 0644 README.md "$doc/README.md"
	if [ -z "$DESTDIR" ] && [ "$(id -u)" = 0 ]; then
		getent group opus-admin >/dev/null || groupadd --system opus-admin
		getent passwd opus >/dev/null || useradd --system --no-create-home --home-dir /var/lib/opus --shell /usr/sbin/nologin --user-group opus
		install -d -o opus -g opus -m 0755 /var/lib/opus
		command -v systemctl >/dev/null && [ -d /run/systemd/system ] && systemctl daemon-reload || true
	fi
	echo "installed into ${DESTDIR:-/} (PREFIX=$PREFIX)"
	;;
uninstall)
	rm -f "$bin/opusctl" "$sbin/opusd" "$sbin/opus-privd"
	for u in opusd.service opusd.socket opus-privd.service opus-privd.socket; do rm -f "$units/$u"; done
	rm -rf "$doc"
	# The config is the admin's; leave it unless it is still the default.
	if [ -f "$conf/opus.conf" ] && cmp -s systemd/opus.conf "$conf/opus.conf"; then
		rm -f "$conf/opus.conf"
		rmdir "$conf" 2>/dev/null || true
	fi
	if [ -z "$DESTDIR" ] && [ "$(id -u)" = 0 ]; then
		getent passwd opus >/dev/null && userdel opus || true
		getent group opus >/dev/null && groupdel opus 2>/dev/null || true
		getent group opus-admin >/dev/null && groupdel opus-admin || true
	fi
	echo "uninstalled from ${DESTDIR:-/}"
	;;
*)
	echo "usage: $0 install|uninstall" >&2
	exit 2
	;;
esac
