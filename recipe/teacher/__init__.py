"""Teacher rationales: the ``cotrecipe teach`` command that asks a teacher model for rationales (:mod:`.teach`,
its OpenAI-compatible client :mod:`.client`, its statistics :mod:`.stats`), the rationale format and its parsing
(:mod:`.format`), and applying a rationales file to the training problems (:mod:`.rationales`).

May import: ``recipe.models`` (local teacher generation), ``recipe.data`` and the flat helpers. Never the config,
training, evaluation or run layers.
"""
