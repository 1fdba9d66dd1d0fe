"""The Django test server's views and URLconf (``ROOT_URLCONF``, see django_app)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path


def hello(request: HttpRequest) -> HttpResponse:
    response = HttpResponse("hello from django\n", content_type="text/plain")
    response["X-App"] = "django"
    return response


def item(request: HttpRequest, number: int) -> JsonResponse:
    return JsonResponse({"item": number, "q": request.GET.get("q")})


def echo(request: HttpRequest) -> HttpResponse:
    return HttpResponse(request.body, content_type=request.content_type or "text/plain")


urlpatterns = [
    path("hello", hello),
    path("items/<int:number>", item),
    path("echo", echo),
]
