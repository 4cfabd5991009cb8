"""The run entries that train: the warm-up, the three BRIDGE stages (:mod:`.stage1`, :mod:`.stage2`,
:mod:`.stage3`) and the baselines (:mod:`.baseline_sft`, :mod:`.baseline_grpo`, :mod:`.baseline_concise`), one
module each with a ``run(cfg, stage_dir, init_from)``; what they share (:mod:`.common`, :mod:`.objective`, :mod:`.epochs`,
:mod:`.sft_tokenise`) and the TRL trainer arguments built from the config (:mod:`.trl_args`).

May import: ``recipe.teacher``, ``recipe.store.rundir``, ``recipe.config``, ``recipe.rewards``, ``recipe.models``,
``recipe.data`` and the flat helpers. Never ``recipe.eval``, ``recipe.tools`` or the run orchestrator, which calls
these entries.
"""
