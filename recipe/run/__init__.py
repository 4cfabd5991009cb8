"""One run, top to bottom: the orchestrator that trains and evaluates a run's entries in order (:mod:`.orchestrator`),
child processes for one entry each (:mod:`.subrun`, :mod:`.child`), several of them side by side (:mod:`.parallel`),
forked on the CPU from a server that imported the training libraries once (:mod:`.forkserver`), and Ctrl-C in all of
them (:mod:`.interrupt`).

May import: every package but ``recipe.cli``; nothing below imports this package. The run directory these modules
write lives below the entries, in ``recipe.store``; the registry of entries is plain data at the ground
(``recipe.entries``).
"""
