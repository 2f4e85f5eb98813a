"""Example runners; ``pgq dev`` runs :mod:`pgq.examples.seed`."""
