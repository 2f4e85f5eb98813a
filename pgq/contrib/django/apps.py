"""The Django app ``pgq`` (``INSTALLED_APPS += ["pgq.contrib.django"]``)."""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.db.models.signals import post_migrate


class PgqConfig(AppConfig):
    name = "pgq.contrib.django"
    label = "pgq"
    verbose_name = "pgq"

    def ready(self) -> None:
        post_migrate.connect(_migrate_pgq, sender=self, dispatch_uid="pgq.contrib.django.migrate")


def _migrate_pgq(using: str, verbosity: int = 1, **kwargs: Any) -> None:
    """``manage.py migrate`` also applies pgq's own migrations (its ``sql/`` files, recorded
    in ``pgq.migrations``) to each database a ``PgqBackend`` uses. Running them on every
    migrate is cheap: pgq's migrator skips what is applied, and it is what brings an
    upgraded pgq's new migrations in."""
    from .worker import backends_on, migrate_database

    if not backends_on(using):
        return
    applied = migrate_database(using)
    if verbosity >= 1:
        stdout = kwargs.get("stdout")
        message = (
            f"  pgq: applied {', '.join(applied)}\n" if applied else "  pgq: schema up to date\n"
        )
        if stdout is not None:
            stdout.write(message)
