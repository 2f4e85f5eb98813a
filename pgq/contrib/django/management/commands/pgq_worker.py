"""``manage.py pgq_worker``: run the project's Django tasks with a pgq runner."""

from __future__ import annotations

import importlib
import sys
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.tasks import task_backends
from django.tasks.exceptions import InvalidTaskBackend
from django.utils.module_loading import autodiscover_modules

from pgq.contrib.django.backend import PgqBackend
from pgq.contrib.django.worker import build_runner, ensure_logging, run_worker
from pgq.errors import PgqError


class Command(BaseCommand):
    help = (
        "Run the tasks of a pgq task backend: imports every installed app's tasks module, "
        "claims their jobs and runs them until SIGTERM/SIGINT (the first drains within "
        "--grace seconds, a second stops at once)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--backend", default="default", help="the TASKS alias to run (default: default)"
        )
        parser.add_argument(
            "--queues",
            help="comma-separated queues to claim from (default: the backend's QUEUES)",
        )
        parser.add_argument(
            "--concurrency", type=int, default=10, help="tasks at once (default: 10)"
        )
        parser.add_argument(
            "--grace",
            type=float,
            default=30.0,
            help="seconds running tasks get to finish on SIGTERM (default: 30)",
        )
        parser.add_argument(
            "--import",
            dest="modules",
            action="append",
            default=[],
            metavar="MODULE",
            help="also import this module for its tasks (repeatable)",
        )
        parser.add_argument(
            "--dsn", help="the database URL for the runner (default: the backend's database)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        alias = options["backend"]
        try:
            backend = task_backends[alias]
        except InvalidTaskBackend as exc:
            raise CommandError(str(exc)) from None
        if not isinstance(backend, PgqBackend):
            raise CommandError(
                f"TASKS[{alias!r}] is {type(backend).__name__}, not pgq.contrib.django.PgqBackend"
            )
        autodiscover_modules("tasks")
        for module in options["modules"]:
            try:
                importlib.import_module(module)
            except ImportError as exc:
                raise CommandError(f"--import {module}: {exc}") from None
        queues = options["queues"]
        try:
            runner, pool = build_runner(
                backend,
                queues=[q.strip() for q in queues.split(",") if q.strip()] if queues else None,
                concurrency=options["concurrency"],
                grace=options["grace"],
                dsn=options["dsn"],
            )
        except (ImproperlyConfigured, ValueError) as exc:
            raise CommandError(str(exc)) from None
        ensure_logging()
        try:
            code = run_worker(runner, pool)
        except PgqError as exc:  # e.g. the schema is not migrated
            raise CommandError(str(exc)) from None
        if code:
            sys.exit(code)
