"""What ``cotrecipe plan`` reads from the user before it estimates (:mod:`recipe.tools.plan`): a model's
``config.json`` (the file named, with the parse error's line and column, when it is not one), the card size and the
sequence length, each refused in one line naming what is wrong.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from recipe.config.core import Config
from recipe.errors import PlanError

# config.json fields the estimate needs (positive integers); num_key_value_heads, head_dim and
# max_position_embeddings are optional but must be positive integers when given
REQUIRED_DIMS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size")
OPTIONAL_DIMS = ("num_key_value_heads", "head_dim", "max_position_embeddings")


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def read_model_config(path: Path) -> dict:
    """A model's ``config.json`` as a dict holding the dimensions :class:`ModelDims` reads; a file that is not one is
    a one-line :class:`PlanError` naming the file and what is wrong (the parse error's line and column)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise PlanError(f"{path} is not a model config.json: not UTF-8 text (byte {err.start})") from None
    except json.JSONDecodeError as err:
        raise PlanError(f"{path} is not valid JSON: {err.msg} at line {err.lineno}, column {err.colno}") from None
    except (ValueError, RecursionError) as err:  # an integer over Python's digit limit, nesting too deep
        why = "nested too deeply" if isinstance(err, RecursionError) else str(err)[:80]
        raise PlanError(f"{path} is not usable JSON ({why})") from None
    if not isinstance(data, dict):
        raise PlanError(f"{path} is not a model config.json: expected a JSON object, got {type(data).__name__}")
    bad = [k for k in REQUIRED_DIMS if not _positive_int(data.get(k))]
    bad += [k for k in OPTIONAL_DIMS if data.get(k) is not None and not _positive_int(data[k])]
    if bad:
        raise PlanError(f"{path} is not a usable model config.json: {', '.join(bad)} must be positive integers "
                        f"(needed: {', '.join(REQUIRED_DIMS)})")
    return data


def check_inputs(cfg: Config, max_positions: int | None, gpu_gib: float | None) -> None:
    """What ``cotrecipe plan`` refuses before estimating, each in one line naming the value: a card size that is not
    a finite number above 0 (``--gpu-mem``), a ``model.max_seq_length`` above the model's own position limit
    (``max_positions``: its config.json's ``max_position_embeddings``, None when it gives none)."""
    if gpu_gib is not None and not (math.isfinite(gpu_gib) and gpu_gib > 0):
        raise PlanError(f"bad value for '--gpu-mem': {gpu_gib:g} (the card's memory in GiB: a number > 0)")
    limit, seq = max_positions, cfg.model.max_seq_length
    if limit is not None and seq > limit:
        raise PlanError(f"bad value for 'model.max_seq_length': {seq} (above the model's position limit, "
                        f"max_position_embeddings={limit} in its config.json: at most {limit})")
