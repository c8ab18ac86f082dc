# The fixed driver opus-privd runs as `python3 -c <this file> MANAGE_PY JSON`
# to run several manage.py commands in ONE interpreter: each Python start
# plus django.setup() costs about a quarter of a second, paid once here
# instead of once per command.
#
# It is embedded in opus-privd (never written or chosen by opusd). JSON is
# a list of argument lists that privd built and validated from its own
# command enum. Each command runs exactly as `python3 manage.py ARGS...`
# would (the project's manage.py via runpy, so its output and exit codes
# are the same), in order, stopping at the first that fails. Progress goes
# to fd 3, one line per event, which is how privd learns which command
# failed (or was running when the timeout killed the process):
#   start I
#   done I EXIT_CODE
# The superuser password arrives in DJANGO_SUPERUSER_PASSWORD; it is taken
# out of the environment at once and put back only while createsuperuser
# runs.
import json
import os
import runpy
import sys
import traceback


class Tee:
    """Writes through to a stream and keeps what was written."""

    def __init__(self, stream):
        self.stream = stream
        self.parts = []

    def write(self, s):
        self.parts.append(s)
        return self.stream.write(s)

    def flush(self):
        self.stream.flush()

    def text(self):
        return "".join(self.parts)

    def __getattr__(self, name):
        return getattr(self.stream, name)


def exit_code(code):
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def run(manage, args, password):
    sys.argv = [manage] + args
    tee = None
    if args[0] == "createsuperuser":
        os.environ["DJANGO_SUPERUSER_PASSWORD"] = password or ""
        tee = Tee(sys.stderr)
        sys.stderr = tee
    try:
        runpy.run_path(manage, run_name="__main__")
        code = 0
    except SystemExit as e:
        code = exit_code(e.code)
    except Exception:
        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        if tee is not None:
            sys.stderr = tee.stream
            os.environ.pop("DJANGO_SUPERUSER_PASSWORD", None)
    if code != 0 and tee is not None:
        said = tee.text()
        if "already taken" in said or "already exists" in said:
            # An existing superuser of that name is what was asked for.
            print("Superuser already exists; left as it is.")
            code = 0
    return code


def main():
    status = os.fdopen(3, "w", buffering=1)
    manage = sys.argv[1]
    commands = json.loads(sys.argv[2])
    password = os.environ.pop("DJANGO_SUPERUSER_PASSWORD", None)
    for i, args in enumerate(commands):
        status.write("start %d\n" % i)
        code = run(manage, args, password)
        status.write("done %d %d\n" % (i, code))
        if code != 0:
            return code
    return 0


sys.exit(main())
