from demo import views
from django.urls import path

urlpatterns = [
    path("add", views.enqueue_add),
    path("tasks/<str:result_id>", views.task_result),
]
