"""Option helpers of the ``cotrecipe`` commands (:mod:`recipe.cli`): the config options every command takes, and the
eval command's option handling.

>>> eval_overrides("test", 5, None)
['eval.split="test"', 'eval.limit=5']
"""

from __future__ import annotations

import json
import logging

import click

from recipe import dist
from recipe.errors import EvalError


def config_options(fn):
    fn = click.option("--strict", is_flag=True, help="Stop at the first bad data row (data.strict=true).")(fn)
    fn = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                      help="Override one config value, e.g. --set stage2.learning_rate=1e-5 (repeatable).")(fn)
    fn = click.option("--config", "config_file", type=click.Path(dir_okay=False),
                      help="A YAML file laid over the preset.")(fn)
    fn = click.option("--preset", default=None, help="A shipped preset (see `cotrecipe presets`).")(fn)
    return fn


def eval_overrides(split: str | None, limit: int | None, batch_size: int | None) -> list[str]:
    out = []
    if split is not None:
        out.append(f"eval.split={json.dumps(split)}")
    if limit is not None:
        if limit == 0 or limit < -1:
            raise EvalError(f"--limit must be a positive count (or -1 for the whole split), got {limit}")
        out.append(f"eval.limit={limit}")
    if batch_size is not None:
        out.append(f"eval.batch_size={batch_size}")
    return out


def echo_official(results, checker: str) -> None:
    """With ``--checker official``: the authors' accuracy of each evaluated model, on their terms."""
    if checker != "official":
        return
    for name, res in results:
        m = res["metrics"]
        if "official_accuracy" not in m:
            click.echo(f"{name}: no official verdicts recorded (evaluated before they existed; delete its results.json "
                       "and evaluate again)")
            continue
        click.echo(f"{name}: official checker {100 * m['official_accuracy']:.2f}% ({m['official_n_correct']}/{m['n']})"
                   f" vs ours {100 * m['accuracy']:.2f}% ({m['n_correct']}/{m['n']})")


def setup_logging() -> None:
    logger = logging.getLogger("recipe")
    if logger.handlers:
        return
    from rich.console import Console
    from rich.logging import RichHandler

    # log lines go to stderr: stdout carries what a command prints (`cotrecipe config > run.yaml` stays pure YAML)
    handler = RichHandler(console=Console(stderr=True), show_path=False, rich_tracebacks=False, markup=False)
    prefix = f"[{dist.describe()}] " if dist.is_distributed() else ""  # under accelerate launch: whose line it is
    handler.setFormatter(logging.Formatter(prefix + "%(message)s", datefmt="[%X]"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
