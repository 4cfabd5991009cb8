"""The GPU path's stand-ins inside the child processes of a ``run-all`` under test (tests/test_gpu_processes.py):
each child (``python -m recipe.run.child``) starts with a ``sitecustomize`` that calls :func:`install`, which fakes a
T4 for torch, puts the unsloth and vllm stand-ins of tests/test_gpu_backend.py and tests/test_vllm_generation.py
(real signatures of the pinned wheels) on the import path, and logs every vLLM engine built, every generate call and
every trainer start to the file :data:`LOG_ENV` names, one JSON line per event with the process id. Nothing of this
ships in the package."""

from __future__ import annotations

import importlib
import json
import os
import sys

LOG_ENV = "COTRECIPE_TEST_ENGINE_LOG"

SITECUSTOMIZE = f"""import os
if os.environ.get({LOG_ENV!r}):
    from tests.gpu_children import install
    install()
"""


def record(event: str, **fields) -> None:
    """Append one event of this process to the log (a line is one ``write``: the processes run one at a time)."""
    line = json.dumps({"event": event, "pid": os.getpid(), "argv": sys.argv[1:], **fields}, sort_keys=True)
    with open(os.environ[LOG_ENV], "a", encoding="utf-8") as fh:
        fh.write(line + "\n")


def install() -> None:
    """Fake a T4 (compute capability 7.5) and make ``unsloth``, ``unsloth_zoo`` and ``vllm`` importable as the
    stand-ins, with engines that decode on this CPU and log what they do."""
    import torch

    from recipe.models import model as M
    from recipe.train.trainer import install_callbacks
    from tests.test_gpu_backend import StandIn
    from tests.test_vllm_generation import FakeLLM, VllmStandIn

    torch.cuda.is_available = lambda: True
    torch.cuda.get_device_capability = lambda *a, **k: (7, 5)
    torch.cuda.is_bf16_supported = lambda including_emulation=True: including_emulation
    torch.cuda.empty_cache = lambda: None
    for module in (torch.cuda, torch.cuda.random):  # a checkpoint saves the CUDA RNG: the CPU's stands in
        module.get_rng_state = lambda device="cuda": torch.get_rng_state()
        module.get_rng_state_all = lambda: [torch.get_rng_state()]

    class LoggedLLM(FakeLLM):
        def generate(self, *args, **kwargs):
            outputs = super().generate(*args, **kwargs)
            request = self.calls[-1]["lora_request"]
            record("generate", engine=id(self), n_prompts=self.calls[-1]["n_prompts"],
                   lora=None if request is None else [request.lora_int_id, request.lora_path])
            return outputs

    standin = StandIn()

    def engine_for(base: str) -> LoggedLLM:
        engine = LoggedLLM(lambda: standin.base_model(base), M.load_tokenizer(base))
        record("engine", engine=id(engine), base=base)
        return engine

    standin.engine_factory = engine_for
    # TRL decides at import whether vLLM is installed (and then imports its internals): let it find none, as in the
    # test process, where TRL is imported before the stand-in goes on the path
    importlib.import_module("trl.trainer.grpo_trainer")
    sys.meta_path[:0] = [standin, VllmStandIn()]
    install_callbacks(callbacks)  # every trainer start is logged


def callbacks(entry: str) -> list:
    """The trainer-callback factory :func:`install` installs (:func:`recipe.train.trainer.install_callbacks`): log
    which engine the model a trainer starts with carries."""
    from transformers import TrainerCallback

    from recipe.models import unsloth_backend

    class EngineAtStart(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            engine = unsloth_backend.engine_of(model)
            record("train", entry=entry, engine=None if engine is None else id(engine))

    return [EngineAtStart()]
