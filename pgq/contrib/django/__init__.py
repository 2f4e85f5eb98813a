"""pgq for Django: a backend for Django's Tasks framework.

Needs Django >= 6 (Python >= 3.12): ``pip install 'pgq-coordinator[django]'``.

::

    INSTALLED_APPS = [..., "pgq.contrib.django"]          # app label "pgq"
    TASKS = {"default": {"BACKEND": "pgq.contrib.django.PgqBackend"}}

``task.enqueue()`` runs ``pgq.enqueue`` on Django's own database connection (so it is part
of the caller's ``transaction.atomic()``), ``manage.py migrate`` installs pgq's schema,
``manage.py pgq_worker`` runs the project's tasks with a ``pgq.Runner`` and
``get_result()`` reads the job back.
"""

from .backend import PgqBackend, PgqTask

__all__ = ["PgqBackend", "PgqTask"]
