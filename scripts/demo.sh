#!/bin/sh
# The README's main command (make demo): starts opus-privd, opusd and the
# managed Apache on the embedded defaults, deploys the sample project from
# examples/, prints its URLs and shows a request answered by it, and turns
# on the web console (printing its URL and a one-time login link).
#   scripts/demo.sh        deploy (again) and show
#   scripts/demo.sh stop   destroy the sample project and stop everything
set -eu
cd "$(dirname "$0")/.."
BIN=$(pwd)/bin
LOG=/var/log/opus
PROJECT=${PROJECT:-demo}
WEB_ADDR=${WEB_ADDR:-127.0.0.1:8444}
[ "$(id -u)" = 0 ] || { echo "demo: run as root (it creates users and starts Apache)" >&2; exit 1; }

mkdir -p "$LOG"
getent group opus-admin >/dev/null || groupadd --system opus-admin
getent passwd opus >/dev/null || useradd --system --no-create-home --home-dir /var/lib/opus --shell /usr/sbin/nologin --user-group opus
install -d -o opus -g opus -m 0755 /var/lib/opus
install -d -o root -g opus -m 0775 /run/opus

PRIVD_PID=/run/opus/demo-privd.pid
OPUSD_PID=/run/opus/demo-opusd.pid
APACHE_PID=/var/lib/opus-apache/run/httpd.pid
# LINK puts opusctl on PATH for README's "Using it" commands; made only
# where nothing is (an installed opusctl stays), removed by stop.
LINK=/usr/local/bin/opusctl

running() { [ -S "$1" ] && "$BIN/opusctl" --socket /run/opus/opusd.sock ls >/dev/null 2>&1; }

# alive PIDFILE NAME: the pid in PIDFILE is a live process whose command
# line mentions NAME (a recycled pid is not ours). Processes are only ever
# found by the pid the demo recorded, never by name: other Opus daemons
# (the end-to-end tests', an installed one) may run on this host.
alive() {
	[ -f "$1" ] || return 1
	pid=$(cat "$1")
	[ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "$2"
}

# end PIDFILE NAME: SIGTERM the recorded process and wait (up to 30 s)
# until it is gone.
end() {
	if alive "$1" "$2"; then
		pid=$(cat "$1")
		kill "$pid" 2>/dev/null || true
		i=0
		while [ -d "/proc/$pid" ] && [ $i -lt 300 ]; do
			sleep 0.1
			i=$((i + 1))
		done
		[ ! -d "/proc/$pid" ] || echo "demo: $2 (pid $pid) did not stop" >&2
	fi
	rm -f "$1"
}

start() {
	if ! alive "$PRIVD_PID" opus-privd; then
		nohup "$BIN/opus-privd" >>"$LOG/privd.log" 2>&1 &
		echo $! >"$PRIVD_PID"
	fi
	if ! alive "$OPUSD_PID" opusd; then
		# setpriv execs opusd: $! is opusd's pid.
		nohup setpriv --reuid opus --regid opus --clear-groups "$BIN/opusd" --web-addr "$WEB_ADDR" >>"$LOG/opusd.log" 2>&1 &
		echo $! >"$OPUSD_PID"
	fi
	i=0
	until running /run/opus/opusd.sock; do
		i=$((i + 1))
		[ $i -lt 100 ] || { echo "demo: opusd did not come up; see $LOG/opusd.log and $LOG/privd.log" >&2; exit 1; }
		sleep 0.1
	done
}

stop() {
	if running /run/opus/opusd.sock; then
		"$BIN/opusctl" destroy "$PROJECT" --yes || echo "demo: destroying $PROJECT failed; see $LOG/opusd.log" >&2
	fi
	end "$OPUSD_PID" opusd
	end "$PRIVD_PID" opus-privd
	# The front Apache and every project's backend outlive privd; each
	# backend's master stops its mod_wsgi daemon and workers with it.
	end "$APACHE_PID" /var/lib/opus-apache/httpd.conf
	for conf in /var/lib/opus-apache/backends/*/httpd.conf; do
		[ -e "$conf" ] || continue
		end "$(dirname "$conf")/run/httpd.pid" "$conf"
	done
	# The link to bin/opusctl that start made, and only that.
	[ "$(readlink "$LINK" 2>/dev/null)" != "$BIN/opusctl" ] || rm -f "$LINK"
	echo "demo stopped"
}

if [ "${1:-}" = stop ]; then
	stop
	exit 0
fi

start
if [ ! -e "$LINK" ] && [ ! -L "$LINK" ]; then
	mkdir -p "$(dirname "$LINK")"
	ln -s "$BIN/opusctl" "$LINK"
fi
if ! "$BIN/opusctl" show "$PROJECT" >/dev/null 2>&1; then
	password=$(head -c 12 /dev/urandom | base64 | tr -d '/+=')
	echo "$password" | "$BIN/opusctl" create "$PROJECT" \
		--app examples/hello --app examples/notes \
		--admin --superuser admin --superuser-email admin@example.com --superuser-password-stdin
	echo "admin login: admin / $password (shown once)"
fi
"$BIN/opusctl" show "$PROJECT"
url=$("$BIN/opusctl" show "$PROJECT" -o json | sed -n 's/.*"\(http:[^"]*\)".*/\1/p' | head -n 1)
echo
echo "GET ${url}hello/"
curl -sS --max-time 10 "${url}hello/"
echo
echo "Open ${url} (and /admin/); stop with: make demo-stop"
echo
echo "Web console: https://$WEB_ADDR/ (self-signed certificate)"
if link=$("$BIN/opusctl" web login 2>/dev/null); then
	echo "Sign in as root with this one-time link (5 minutes): $link"
else
	echo "(this opusd runs without the console: make demo-stop, then make demo)"
fi
echo "Any user signs in as themselves with: opusctl web login"
if [ "$(readlink "$LINK" 2>/dev/null)" = "$BIN/opusctl" ]; then
	echo "opusctl is on your PATH ($LINK -> bin/opusctl): try the commands under \"Using it\" in README.md"
else
	echo "opusctl is $BIN/opusctl ($LINK is another one)"
fi
