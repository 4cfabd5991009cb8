"""The run store: one run directory with its manifest and file names (:mod:`.rundir`), the config fingerprint its
records keep (:mod:`.fingerprint`) and its writer lock (:mod:`.runlock`). The orchestrator writes it; the entries
(``recipe.train``), evaluation and report (``recipe.eval``) and the tools (``recipe.tools``) read and write their own
parts of it through these modules.

May import: ``recipe.config`` (its registry of entries included), ``recipe.models`` (the weights' integrity check)
and the flat helpers. Never the entries, evaluation, tools or the orchestrator above it.
"""
