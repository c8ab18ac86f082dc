# Shared by floor.sh and seed.sh: setup, timing, the vhost, the graceful
# restart, the first request, and cleanup. Sourced, not run.
#
# Both scripts take the managed Apache that the e2e harness (or
# `make demo`) started: APACHE_DIR (its ServerRoot, holding httpd.conf,
# sites/ and run/httpd.pid), HTTP_PORT, HTTPS_PORT and WORK (a scratch
# directory). They print "step NAME SECONDS" lines and "total SECONDS"
# for the timed part, then clean up everything they made (user, files,
# vhost) — also when interrupted.
set -eu

: "${APACHE_DIR:?APACHE_DIR: the managed Apache ServerRoot}"
: "${HTTP_PORT:?HTTP_PORT}"
: "${HTTPS_PORT:?HTTPS_PORT}"
: "${WORK:?WORK: a scratch directory}"
PYTHON=${PYTHON:-/usr/bin/python3}
EXAMPLES=${EXAMPLES:-$(cd "$(dirname "$0")/../../examples" && pwd)}
PASSWORD=${PASSWORD:-correct-horse-battery-9}

# The e2e harness passes NAME and USER_NAME from its run (and writes the
# user down first), so that a killed run's user is removed by the next.
NAME=${NAME:-e$(tr -dc a-z </dev/urandom | head -c 6)}
USER_NAME=${USER_NAME:-opus-$NAME}
HOST=$NAME.bench.localhost
DIR=$WORK/$NAME
CODE=$DIR/code
VHOST=$APACHE_DIR/sites/$NAME.conf
# The project's backend: its own Apache + mod_wsgi daemon, as opus-privd
# runs it (ServerRoot, configuration, pid file, sockets).
BACKEND=$WORK/$NAME.backend

now() { date +%s.%N; }
T0=$(now)
LAST=$T0
# step NAME: prints how long since the previous step ended.
step() {
	local t
	t=$(now)
	awk -v a="$LAST" -v b="$t" -v n="$1" 'BEGIN { printf "step %s %.3f\n", n, b - a }'
	LAST=$t
}
total() { awk -v a="$T0" -v b="$(now)" 'BEGIN { printf "total %.3f\n", b - a }'; }

graceful() { apache2 -d "$APACHE_DIR" -f "$APACHE_DIR/httpd.conf" -k graceful; }

# stop_backend ends the backend's master (which ends its workers and its
# mod_wsgi daemon).
stop_backend() {
	local pid
	pid=$(cat "$BACKEND/run/httpd.pid" 2>/dev/null) || return 0
	kill "$pid" 2>/dev/null
	for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
}

cleanup() {
	set +e
	if [ -e "$VHOST" ]; then
		rm -f "$VHOST"
		graceful
	fi
	stop_backend
	rm -rf "$BACKEND"
	# The mod_wsgi daemon leaves after the graceful; userdel refuses a
	# user that still runs something.
	if id "$USER_NAME" >/dev/null 2>&1; then
		for _ in $(seq 100); do pgrep -u "$USER_NAME" >/dev/null || break; sleep 0.1; done
		pkill -KILL -u "$USER_NAME" 2>/dev/null
		userdel "$USER_NAME" 2>/dev/null
		getent group "$USER_NAME" >/dev/null && groupdel "$USER_NAME" 2>/dev/null
	fi
	rm -rf "$DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

make_user() {
	useradd --system --no-create-home --shell /usr/sbin/nologin --user-group \
		--comment "Opus project bench $NAME" "$USER_NAME"
	mkdir -p "$CODE" "$DIR/data" "$DIR/static"
}

# as_user CMD...: run as the project user with a fixed environment, like
# opus-privd runs manage.py.
as_user() {
	setpriv --reuid="$USER_NAME" --regid="$USER_NAME" --clear-groups \
		env -i PATH=/usr/bin:/bin LANG=C.UTF-8 HOME="$DIR" PYTHONDONTWRITEBYTECODE=1 \
		DJANGO_SETTINGS_MODULE=benchsite.settings DJANGO_SUPERUSER_PASSWORD="$PASSWORD" \
		sh -c 'cd "$0" && exec "$@"' "$CODE" "$@"
}

# secure: code readable by the project; data and static written by it,
# static read by Apache's workers.
secure() {
	chown -R "root:$USER_NAME" "$DIR"
	chmod -R u=rwX,g=rX,o=rX "$DIR"
	chown -R "$USER_NAME:$USER_NAME" "$DIR/data" "$DIR/static"
	chmod 0770 "$DIR/data"
}

# write_vhost WSGI_SCRIPT: what opus-privd renders: the project's backend
# (its own Apache, its mod_wsgi daemon as the project user, at the
# project's loopback address) and the front's vhost routing to it.
write_vhost() {
	local wsgi=$1 uid addr m
	uid=$(id -u "$USER_NAME")
	addr=127.$((1 + uid / 65536)).$((uid / 256 % 256)).$((uid % 256)):1023
	mkdir -p "$BACKEND/run"
	{
		echo "ServerRoot \"$BACKEND\""
		echo "DefaultRuntimeDir $BACKEND/run"
		echo "PidFile $BACKEND/run/httpd.pid"
		echo "ErrorLog $BACKEND/error.log"
		echo "ServerName $HOST"
		for m in mpm_event authz_core alias mime setenvif wsgi; do
			echo "LoadModule ${m}_module /usr/lib/apache2/modules/mod_$m.so"
		done
		cat <<BE
User $USER_NAME
Group $USER_NAME
TypesConfig /etc/mime.types
Listen $addr
StartServers 1
ServerLimit 2
ThreadsPerChild 14
MaxRequestWorkers 14
WSGISocketPrefix $BACKEND/run/wsgi
WSGIRestrictEmbedded On
SetEnvIf X-Forwarded-Proto "^https\$" HTTPS=on
WSGIDaemonProcess $NAME user=$USER_NAME group=$USER_NAME home=$DIR processes=1 threads=10 display-name=%{GROUP} python-path=$CODE lang=C.UTF-8 locale=C.UTF-8
WSGIProcessGroup $NAME
WSGIApplicationGroup %{GLOBAL}
WSGIScriptAlias / $wsgi process-group=$NAME application-group=%{GLOBAL}
Alias /static/ $DIR/static/
<Directory $(dirname "$wsgi")>
    Require all granted
</Directory>
<Directory $DIR/static>
    Require all granted
</Directory>
BE
	} >"$BACKEND/httpd.conf"
	cat >"$VHOST" <<VH
<VirtualHost *:$HTTP_PORT>
    ServerName $HOST
    RequestHeader set X-Forwarded-Proto http
    ProxyPreserveHost On
    ProxyPass / http://$addr/ retry=0 disablereuse=On
</VirtualHost>
<VirtualHost *:$HTTPS_PORT>
    ServerName $HOST
    SSLEngine on
    SSLCertificateFile $DIR/tls.crt
    SSLCertificateKeyFile $DIR/tls.key
    RequestHeader set X-Forwarded-Proto https
    ProxyPreserveHost On
    ProxyPass / http://$addr/ retry=0 disablereuse=On
</VirtualHost>
VH
}

# start_backend starts the backend (as root: it binds a port below 1024
# and switches to the project user).
start_backend() { apache2 -d "$BACKEND" -f "$BACKEND/httpd.conf" -k start; }

# first_200 PATH: request until the project answers 200 (the graceful
# restart is asynchronous), for at most 30 s.
first_200() {
	local code
	for _ in $(seq 600); do
		code=$(curl -s -o /dev/null -w '%{http_code}' -H "Host: $HOST" "http://127.0.0.1:$HTTP_PORT$1" || true)
		[ "$code" = 200 ] && return 0
		sleep 0.05
	done
	echo "no 200 from http://$HOST:$HTTP_PORT$1 (last: $code)" >&2
	return 1
}

# serve WSGI: what a person does once the code is ready, timed step by
# step: the key private, the vhost, the backend, the front's graceful, and
# the first 200 from /hello/.
serve() {
	chmod 0600 "$DIR/tls.key"
	step certificate
	write_vhost "$1"
	step vhost
	start_backend
	step backend
	graceful
	step graceful
	first_200 /hello/
	step request
	total
}
