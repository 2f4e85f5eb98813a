"""Tools for developing with pgq, apart from the core: ``pgq dev`` (:mod:`.dev`), ``pgq bench``
(:mod:`.bench`) and the embedded PostgreSQL server they and the tests use (:mod:`.embedded`)."""
