from django.http import HttpResponse

from .models import Note


def index(request):
    notes = Note.objects.order_by("-created")[:20]
    body = "notes: %d\n" % Note.objects.count()
    body += "".join("- %s\n" % n.text for n in notes)
    return HttpResponse(body, content_type="text/plain")
