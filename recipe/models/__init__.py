"""The model seam: resolve a model name, pick a backend (``hf`` or ``unsloth``), load and save
(:mod:`.model`, :mod:`.names`, :mod:`.unsloth_backend`), the precision both backends train in (:mod:`.precision`),
LoRA targets (:mod:`.lora_targets`), the built-in tiny test model (:mod:`.tiny`), device checks (:mod:`.devices`),
weight checks (:mod:`.integrity`), CPU speed-ups that change no output (:mod:`.speedups`: grouped attention heads
read in place, GRPO sampling with the LoRA merged, shared prefill and finished rows dropped) and generation: one seam (:func:`.generation.generate`, which alone picks the
decoder) over pruned HF greedy or HF ``generate`` (:mod:`.hf_generation`) and vLLM (:mod:`.vllm_generation`).

May import: ``recipe.data`` (prompt format, stop rules, the synthetic vocabulary of the tiny model),
``recipe.dist``, ``recipe.fsio``, ``recipe.errors``. Never the config, training, evaluation or run layers: callers
pass a ``ModelConfig`` (or any object with its attributes) in.
"""
