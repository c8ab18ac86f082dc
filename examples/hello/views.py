import os

from django.http import HttpResponse


def index(request):
    return HttpResponse(
        "Hello from Opus: project served as uid %d on host %s\n"
        % (os.getuid(), request.get_host()),
        content_type="text/plain",
    )
