"""The run entries that train: the warm-up, the three BRIDGE stages (:mod:`.stage1`, :mod:`.stage2`,
:mod:`.stage3`) and the baselines (:mod:`.baseline_sft`, :mod:`.baseline_grpo`, :mod:`.baseline_concise`), one
module each with a ``run(cfg, entry_dir, init_from)``; what they share: their rows (:mod:`.rows`), one module per
trainer kind that builds its TRL config and trainer (:mod:`.sft`, :mod:`.grpo`), and one training's checkpoints,
callbacks and finished-model folder (:mod:`.trainer`).

May import: ``recipe.teacher``, ``recipe.store.rundir``, ``recipe.config``, ``recipe.rewards``, ``recipe.models``,
``recipe.data`` and the flat helpers. Never ``recipe.eval``, ``recipe.tools`` or the run orchestrator, which calls
these entries.
"""
