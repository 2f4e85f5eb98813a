"""Integrations of pgq with other frameworks; each needs its own optional extra."""
