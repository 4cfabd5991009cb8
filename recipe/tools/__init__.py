"""Commands beside a run: the memory and time estimates (:mod:`.plan`; what each of its rows' processes holds,
:mod:`.plan_process`; the local GPU's memory without a CUDA context, :mod:`.gpu_memory`; :mod:`.plan_time`;
:mod:`.plan_inputs` checks what the user gives them), ``export`` of a stage's weights (:mod:`.export`), the ``doctor``
install check (:mod:`.doctor`) and the Colab installer the notebooks run by path before ``recipe`` is importable
(:mod:`.colab_install`, standard library only).

May import: ``recipe.store.rundir``, ``recipe.config``, ``recipe.models``, ``recipe.data`` and the flat helpers.
Never ``recipe.train``, ``recipe.eval`` or the run orchestrator (which reads :func:`.plan.check_fits`).
"""
