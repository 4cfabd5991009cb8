"""Evaluation and reporting: greedy evaluation of a stage's weights (:mod:`.evaluate`; one vLLM engine serving many,
:mod:`.engine`), scoring a generations file
(:mod:`.scoring`), the authors' official checker (:mod:`.official_checker`), the run report (:mod:`.report`), its
accuracy–length frontier with each row's 95 % intervals (:mod:`.frontier`), training curves (:mod:`.curves`) and
paired statistics (:mod:`.pairstats`).

May import: ``recipe.store.rundir`` (the run directory's file names), ``recipe.config``, ``recipe.models``,
``recipe.rewards``, ``recipe.data`` and the flat helpers. Never ``recipe.train``, ``recipe.teacher`` or the run
orchestrator.
"""
