"""One run: the registry of its entries (:mod:`.entries`), the orchestrator that trains and evaluates them in order
(:mod:`.orchestrator`), child processes for one entry each (:mod:`.subrun`, :mod:`.child`), several of them side by
side (:mod:`.parallel`), Ctrl-C in all of them (:mod:`.interrupt`), and the run directory with its manifest (:mod:`.rundir`), the config fingerprint its records keep
(:mod:`.fingerprint`) and its writer lock (:mod:`.runlock`).

May import: three layers live here. :mod:`.entries` is plain data and imports nothing of the project, so that
``recipe.config`` and everything above it may read it. :mod:`.rundir`, :mod:`.fingerprint` and :mod:`.runlock` are low: they may import only
``recipe.config``, ``recipe.models`` and the flat helpers, and ``recipe.train``, ``recipe.eval`` and ``recipe.tools``
read the run directory's file names from them. :mod:`.orchestrator`, :mod:`.subrun`, :mod:`.parallel`,
:mod:`.child` and :mod:`.interrupt` are the top, under the CLI only: they may import every package but ``recipe.cli``.

This ``__init__`` imports nothing, so that reading ``recipe.run.rundir`` does not load the orchestrator.
"""
