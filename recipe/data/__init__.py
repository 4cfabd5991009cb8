"""GSM8K rows and the text formats around them: reading local files and hub splits (:mod:`.readers`,
:mod:`.gsm8k`), the synthetic set (:mod:`.synthetic`), the prompt format (:mod:`.prompts`), reading and comparing
final answers (:mod:`.answers`, :mod:`.unicode_numbers`) and where a generation stops (:mod:`.stopping`).

May import: ``recipe.fsio``, ``recipe.errors`` and nothing else of the project (no torch either): everything above
reads its rows and formats from here.

``from recipe.data import load_gsm8k, Problem`` is the public entry point.
"""

from recipe.data.gsm8k import Problem, load_gsm8k
from recipe.errors import DataError

__all__ = ["DataError", "Problem", "load_gsm8k"]
