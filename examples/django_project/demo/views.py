"""Enqueue from a view, read the result back."""

from django.db import transaction
from django.http import HttpRequest, JsonResponse
from django.tasks.exceptions import TaskResultDoesNotExist

from .tasks import add


def enqueue_add(request: HttpRequest) -> JsonResponse:
    a, b = int(request.GET.get("a", 0)), int(request.GET.get("b", 0))
    with transaction.atomic():
        # The job commits with whatever else this transaction writes, or not at all.
        result = add.enqueue(a, b)
    return JsonResponse({"id": result.id, "status": result.status})


def task_result(request: HttpRequest, result_id: str) -> JsonResponse:
    try:
        result = add.get_result(result_id)
    except TaskResultDoesNotExist:
        return JsonResponse({"error": f"no task {result_id}"}, status=404)
    body = {"id": result.id, "status": result.status}
    if result.is_finished and result.status == "SUCCESSFUL":
        body["return_value"] = result.return_value
    return JsonResponse(body)
