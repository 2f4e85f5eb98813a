# No models: pgq's tables live in the ``pgq`` schema and are created by pgq's own
# migrations. This module exists because Django sends ``post_migrate`` (which applies
# them, see apps.py) only to apps that have a models module.
