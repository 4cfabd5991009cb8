"""The concise-RL baseline (entry ``baseline-concise``): what a user runs instead of stages 2-3 when the aim is short
answers — plain SFT, then RL with a length reward that never trades accuracy for brevity.

- **Phase 1, SFT** (``<entry>/sft/``): the SFT baseline's trainer (:func:`recipe.train.baseline_sft.run`: the full
  ordered teacher solutions of the stage-1 and stage-2 questions, the evaluation prompt, stage 1's section) at stage
  1's budget (``budget: stage1``, whatever ``baseline_sft.budget`` says), from the run's base model: the same SFT
  budget the curriculum's stage 1 gets, spent on plain solutions instead of the masked-reconstruction task.
- **Phase 2, GRPO** (``<entry>/``): the plain-GRPO baseline's training (:func:`recipe.train.baseline_grpo.train_matched`:
  the stage-1/2 questions alone, stage 2's section, stages 2+3's sampled completions) from phase 1's adapter, with
  one reward, ``all_correct_length`` (:class:`recipe.rewards.length.AllCorrectLengthReward`): 1 right / 0 wrong,
  plus ``baseline_concise.length_weight`` x (1 - tokens / ``stage2.max_completion_length``) for each completion of a
  group whose completions are all right — ConciseR's L-GRPO gating (Song & Zheng 2025, arXiv 2505.21178), as a
  second RL phase that shortens answers on problems the model already solves (Fatemi et al. 2025, arXiv 2504.05185).

Against the curriculum it asks whether BRIDGE's masked-completion task beats a plain length reward at the same
budget: the same SFT steps, the same sampled completions. A rerun after a crash reuses a finished phase 1 (its
record in ``<entry>/sft/record.json`` beside intact weights) and resumes either phase from its last checkpoint.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from recipe import dist
from recipe.config.schema import BaselineSFTConfig, Config, RewardSpec
from recipe.fsio import read_json, write_json
from recipe.models.integrity import weights_dir_problem
from recipe.store.rundir import MODEL_DIR
from recipe.train import baseline_grpo, baseline_sft

log = logging.getLogger("recipe")

SFT_DIR = "sft"  # phase 1's folder inside the entry's
PHASE_RECORD = "record.json"  # phase 1's finished record, written after its weights
REWARD = "all_correct_length"


def concise_config(cfg: Config, max_steps: int) -> Config:
    """Stage 2's section with the matched ``max_steps``, ``baseline_concise.learning_rate`` and the one reward:
    ``all_correct_length`` over TRL's groups of ``stage2.num_generations``, lengths in tokens against
    ``stage2.max_completion_length``."""
    st = cfg.stage2
    reward = RewardSpec(REWARD, params={"num_generations": st.num_generations, "max_length": st.max_completion_length,
                                        "length_weight": cfg.baseline_concise.length_weight, "unit": "tokens"})
    return baseline_grpo.with_stage2(cfg, max_steps, [reward], cfg.baseline_concise.learning_rate)


def sft_phase(cfg: Config, entry_dir: Path, init_from: str | None) -> dict:
    """Phase 1's record: reused when a previous attempt finished it, else trained (resuming its checkpoints)."""
    folder = entry_dir / SFT_DIR
    record_path = folder / PHASE_RECORD
    if record_path.is_file() and weights_dir_problem(folder / MODEL_DIR) is None:
        log.info("baseline concise: SFT phase already finished in %s; reused", folder)
        return {**read_json(record_path), "reused": True}
    log.info("baseline concise: SFT phase at stage 1's budget")
    sft_cfg = dataclasses.replace(cfg, baseline_sft=BaselineSFTConfig(budget="stage1"))
    record = baseline_sft.run(sft_cfg, folder, init_from)
    dist.only_main(write_json, record_path, record)  # then a barrier: every rank sees the record
    return record


def run(cfg: Config, entry_dir: Path, init_from: str | None = None) -> dict:
    sft = sft_phase(cfg, entry_dir, init_from)
    result = baseline_grpo.train_matched(cfg, entry_dir, str(entry_dir / SFT_DIR / MODEL_DIR), concise_config,
                                         what=f"concise, {REWARD} x{cfg.baseline_concise.length_weight:g}")
    phase = {k: sft[k] for k in ("output", "resumed_from", "reused", "data", "metrics", "trainer_config") if k in sft}
    return {**result, "sft_phase": phase}
