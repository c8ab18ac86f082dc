#!/bin/sh
# The README's main command (make demo): starts opus-privd, opusd and the
# managed Apache on the embedded defaults, deploys the sample project from
# examples/, prints its URLs and shows a request answered by it.
#   scripts/demo.sh        deploy (again) and show
#   scripts/demo.sh stop   destroy the sample project and stop everything
set -eu
cd "$(dirname "$0")/.."
BIN=$(pwd)/bin
LOG=/var/log/opus
PROJECT=${PROJECT:-demo}
[ "$(id -u)" = 0 ] || { echo "demo: run as root (it creates users and starts Apache)" >&2; exit 1; }

mkdir -p "$LOG"
getent group opus-admin >/dev/null || groupadd --system opus-admin
getent passwd opus >/dev/null || useradd --system --no-create-home --home-dir /var/lib/opus --shell /usr/sbin/nologin --user-group opus
install -d -o opus -g opus -m 0755 /var/lib/opus
install -d -o root -g opus -m 0775 /run/opus

running() { [ -S "$1" ] && "$BIN/opusctl" --socket /run/opus/opusd.sock ls >/dev/null 2>&1; }

start() {
	if ! pgrep -x opus-privd >/dev/null; then
		nohup "$BIN/opus-privd" >>"$LOG/privd.log" 2>&1 &
	fi
	if ! pgrep -x opusd >/dev/null; then
		nohup setpriv --reuid opus --regid opus --clear-groups "$BIN/opusd" >>"$LOG/opusd.log" 2>&1 &
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
		"$BIN/opusctl" destroy "$PROJECT" --yes 2>/dev/null || true
	fi
	pkill -x opusd 2>/dev/null || true
	pkill -x opus-privd 2>/dev/null || true
	if [ -f /var/lib/opus-apache/run/httpd.pid ]; then
		kill "$(cat /var/lib/opus-apache/run/httpd.pid)" 2>/dev/null || true
	fi
	echo "demo stopped"
}

if [ "${1:-}" = stop ]; then
	stop
	exit 0
fi

start
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
