"""``cotrecipe export``: a finished stage as a LoRA adapter, merged 16-bit weights, or GGUF (+ an Ollama Modelfile).

Formats
    ``lora``      the stage's adapter folder, copied as is (adapter_config.json, weights, tokenizer).
    ``merged16``  the adapter merged into the base weights, written as a plain transformers folder: peft's
                  ``merge_and_unload`` on the hf backend, Unsloth's ``save_pretrained_merged(save_method=
                  "merged_16bit")`` on the unsloth backend. bfloat16 unless ``dtype`` says otherwise.
    ``gguf``      Unsloth's ``save_pretrained_gguf`` when the backend is unsloth; otherwise the merged folder is
                  converted with llama.cpp's ``convert_hf_to_gguf.py`` when given (``converter``), else one error
                  naming what is needed. An Ollama ``Modelfile`` is written next to the .gguf.

The stage's weights are found through the run directory's manifest (the orchestrator's ``stage_output``) and must
pass the run's own integrity check (:func:`recipe.models.integrity.weights_dir_problem`) before anything is written.

The user's files are never removed or replaced without asking: ``--output`` must be a new folder, an empty one, or
one an earlier export wrote (it holds :data:`MARKER`, listing the files that export wrote); a file there, or a
folder holding other files, is refused unless ``force`` (then the export's files are written beside them). Each export
is built in a temporary sibling folder: a new ``--output`` is that folder moved into place; an existing one receives
its files one by one, after the files the previous export listed (and only those) are removed.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from recipe.config import core as config_mod
from recipe.data import prompts
from recipe.data.stopping import STOP_TEXTS
from recipe.entries import STAGES  # the curriculum stages, in training order
from recipe.errors import ExportError, RunError
from recipe.fsio import read_json, write_json, write_text
from recipe.models import model as model_mod
from recipe.models.integrity import weights_dir_problem
from recipe.store.fingerprint import migrate_recorded
from recipe.store.rundir import output_of as stage_output  # the one dependency on the run-directory layout

log = logging.getLogger("recipe")

FORMATS = ("lora", "merged16", "gguf")
LLAMA_CPP_HINT = ("llama.cpp's converter: git clone https://github.com/ggml-org/llama.cpp && pip install -r "
                  "llama.cpp/requirements/requirements-convert_hf_to_gguf.txt, then pass "
                  "--converter llama.cpp/convert_hf_to_gguf.py")
MARKER = ".cotrecipe-export.json"  # in a folder export wrote: {"files": [what it wrote, relative], "run", "stage", ...}


def stage_name(stage: str | int | None) -> str | None:
    """``3`` / ``"3"`` / ``"stage3"`` -> ``"stage3"``; None stays None (the last finished stage)."""
    if stage is None:
        return None
    name = f"stage{stage}" if str(stage).isdigit() else str(stage)
    if name not in STAGES:
        raise ExportError(f"unknown stage '{stage}' (allowed: 1, 2, 3 or {', '.join(STAGES)})")
    return name


def find_stage(run_dir: str | Path, stage: str | int | None = None) -> tuple[str, Path]:
    """(stage, weights folder) of ``stage`` in ``run_dir``, or of its last finished stage when ``stage`` is None."""
    name = stage_name(stage)
    if name is not None:
        return name, Path(stage_output(run_dir, name))
    errors = []
    for candidate in reversed(STAGES):
        try:
            return candidate, Path(stage_output(run_dir, candidate))
        except RunError as exc:
            errors.append(str(exc))
    raise ExportError(f"no finished stage in {run_dir}: {errors[-1]}")


def run_config(run_dir: str | Path) -> config_mod.Config:
    """The config a run was made with (its ``config.yaml``)."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise ExportError(f"{run_dir} has no config.yaml; is it a cotrecipe run directory?")
    return config_mod.resolve(config_file=path, recorded=migrate_recorded)  # older runs' keys in today's places


def _atomic_dir(out: Path):
    out.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))


def export_lora(src: Path, out: Path) -> Path:
    """Copy the stage's adapter folder to the new folder ``out``."""
    if not model_mod.is_adapter_dir(src):
        raise ExportError(f"{src} holds a full model, not a LoRA adapter (model.use_lora was off): "
                          "use --format merged16")
    shutil.copytree(src, out)
    return out


def merge_hf(base: str, src: Path, dtype: str = "bfloat16"):
    """(merged model, tokenizer) with plain transformers + peft: base + adapter -> ``merge_and_unload``."""
    import torch  # lazy: exporting a LoRA copy needs no torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    torch_dtype = getattr(torch, dtype)
    if model_mod.is_adapter_dir(src):
        model = AutoModelForCausalLM.from_pretrained(base, dtype=torch_dtype)
        model = PeftModel.from_pretrained(model, str(src)).merge_and_unload()
    else:
        model = AutoModelForCausalLM.from_pretrained(str(src), dtype=torch_dtype)
    has_tokenizer = (src / "tokenizer_config.json").is_file()
    return model, model_mod.load_tokenizer(str(src) if has_tokenizer else base)


def export_merged(cfg: config_mod.Config, src: Path, out: Path, dtype: str = "bfloat16") -> Path:
    """Merged weights in the new folder ``out``: Unsloth's merged save on the unsloth backend, peft's merge on hf."""
    mcfg = cfg.model
    if model_mod.prepare_backend(mcfg) == "unsloth":  # no engine (not a GRPO or generating load), the run's weights
        model, tokenizer = model_mod.load(mcfg, init_from=src, trainable=False, vllm_cfg=cfg.vllm)
        out.mkdir()  # Unsloth saves into an existing (here: empty) folder
        # dtype=None keeps the base checkpoint's 16-bit dtype; "float32" widens (Unsloth's own options)
        model.save_pretrained_merged(str(out), tokenizer, save_method="merged_16bit",
                                     dtype="float32" if dtype == "float32" else None)
        return out
    model, tokenizer = merge_hf(model_mod.resolve_model_path(mcfg), src, dtype)
    return model_mod.save(model, tokenizer, out)


def modelfile_text(gguf_name: str, eos_token: str | None = None, answer_label: str = prompts.ANSWER_LABEL,
                   stop_texts=STOP_TEXTS, max_new_tokens: int = 512) -> str:
    """An Ollama Modelfile for a recipe-trained model: the recipe's own prompt frame (what every stage trained on,
    ending with ``Reasoning:``) as TEMPLATE, greedy decoding, and the recipe's stop texts plus the eos token.

    >>> text = modelfile_text("model-Q8_0.gguf", eos_token="<|endoftext|>")
    >>> text.splitlines()[0], 'PARAMETER stop "Question:"' in text, "Question: {{ .Prompt }}" in text
    ('FROM ./model-Q8_0.gguf', True, True)
    """
    frame = prompts.eval_prompt("{{ .Prompt }}", answer_label=answer_label)
    stops = list(dict.fromkeys([*stop_texts, *([eos_token] if eos_token else [])]))
    lines = [f"FROM ./{gguf_name}", "", f'TEMPLATE """{frame}"""', "",
             *[f"PARAMETER stop {json.dumps(s)}" for s in stops],
             "PARAMETER temperature 0", f"PARAMETER num_predict {max_new_tokens}", ""]
    return "\n".join(lines)


def write_modelfile(gguf_path: str | Path, eos_token: str | None = None, answer_label: str = prompts.ANSWER_LABEL,
                    max_new_tokens: int = 512) -> Path:
    """Write ``Modelfile`` next to ``gguf_path`` (``ollama create NAME -f Modelfile`` in that folder)."""
    gguf_path = Path(gguf_path)
    path = gguf_path.parent / "Modelfile"
    write_text(path, modelfile_text(gguf_path.name, eos_token, answer_label, max_new_tokens=max_new_tokens))
    return path


def _convert_with_llama_cpp(converter: Path, merged: Path, out: Path, outtype: str) -> Path:
    target = out / f"model-{outtype}.gguf"
    cmd = [sys.executable, str(converter), str(merged), "--outfile", str(target), "--outtype", outtype]
    log.info("running %s", " ".join(cmd))
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0 or not target.is_file():
        raise ExportError(f"{converter.name} failed (exit {result.returncode}): {result.stderr.strip()[-400:]}")
    return target


def export_gguf(cfg: config_mod.Config, src: Path, out: Path, quantization: str = "q8_0",
                converter: str | Path | None = None) -> list[Path]:
    """GGUF file(s) in ``out`` plus a Modelfile beside them. Needs Unsloth (unsloth backend) or llama.cpp's
    ``convert_hf_to_gguf.py`` (``converter``; its outtypes: f32, f16, bf16, q8_0, auto)."""
    mcfg = cfg.model
    backend = model_mod.pick_backend(mcfg)
    if backend != "unsloth" and converter is None:
        raise ExportError("GGUF export needs Unsloth's save_pretrained_gguf (pip install 'cotrecipe[gpu]' on a CUDA "
                          f"machine, model.backend=unsloth) or {LLAMA_CPP_HINT}")
    if backend != "unsloth" and not Path(converter).is_file():  # before the merge, which takes minutes
        raise ExportError(f"converter not found: {converter} (expected {LLAMA_CPP_HINT.split(', then')[0]})")
    out.mkdir(parents=True, exist_ok=True)
    if backend == "unsloth":
        model_mod.prepare_backend(mcfg)
        model, tokenizer = model_mod.load(mcfg, init_from=src, trainable=False, vllm_cfg=cfg.vllm)  # no engine
        # Unsloth merges into save_directory and writes the .gguf to the sibling "<save_directory>_gguf"
        result = model.save_pretrained_gguf(str(out / "merged"), tokenizer, quantization_method=quantization)
        files = [Path(f) for f in (result or {}).get("gguf_files", [])] or sorted(out.rglob("*.gguf"))
    else:
        merged = out / "merged"
        export_merged(cfg, src, merged, dtype="float16" if quantization == "f16" else "bfloat16")
        tokenizer = model_mod.load_tokenizer(str(merged))
        files = [_convert_with_llama_cpp(Path(converter), merged, out, quantization)]
    if not files:
        raise ExportError(f"no .gguf file was written under {out}")
    eos = getattr(tokenizer, "eos_token", None)
    for gguf in files:  # Unsloth writes its own chat-template Modelfile; ours (the recipe's frame) replaces it
        write_modelfile(gguf, eos, cfg.data.answer_label, cfg.eval.max_new_tokens)
    return files


def check_weights(name: str, src: Path) -> None:
    """The stage's weights folder must pass the check a run makes before it uses finished weights."""
    problem = weights_dir_problem(src)
    if problem:
        raise ExportError(f"{name}'s weights {src} are unusable ({problem}); nothing was written: retrain it with "
                          f"`cotrecipe {name} --force` (or `cotrecipe run-all --force`) and export again")


def _previous_files(out: Path) -> set[str] | None:
    """The files an earlier export listed in ``out``'s :data:`MARKER` (paths inside ``out`` only), or None when
    ``out`` holds no readable marker (not an export's folder)."""
    try:
        listed = read_json(out / MARKER).get("files")
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(listed, list) or not all(isinstance(f, str) for f in listed):
        return None
    inside = {f for f in listed if f and not Path(f).is_absolute() and ".." not in Path(f).parts}
    return inside - {MARKER}


def check_output(out: Path, force: bool = False) -> None:
    """``--output`` may be a new folder, an empty one, or one an earlier export wrote; a file is refused, and a folder
    holding files export did not write is refused unless ``force``."""
    if out.is_symlink() and not out.exists():
        raise ExportError(f"--output {out} is a link to nothing; give a new folder's path (nothing was written)")
    if out.exists() and not out.is_dir():
        raise ExportError(f"--output {out} is a file, not a folder; give a new folder's path (nothing was written)")
    if not out.is_dir() or _previous_files(out) is not None:
        return
    others = sorted(p.name for p in out.iterdir())
    if others and not force:
        shown = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
        raise ExportError(f"--output {out} is a folder export did not write (it holds {shown}); choose a new or "
                          "empty folder, or pass --force to write the export's files beside them (files of the same "
                          "names are replaced)")


def place(staged: Path, out: Path, about: dict) -> None:
    """Move the export built in ``staged`` to ``out`` with its :data:`MARKER`: a new ``out`` is ``staged`` renamed;
    into an existing one each file is moved, after the previous export's listed files that this one does not write
    are removed. Nothing else in ``out`` is touched."""
    files = sorted(p.relative_to(staged).as_posix() for p in staged.rglob("*") if p.is_file() or p.is_symlink())
    write_json(staged / MARKER, {**about, "files": files})
    if not out.exists():
        os.replace(staged, out)
        return
    for rel in sorted((_previous_files(out) or set()) - set(files)):
        old = out / rel
        if old.is_file() or old.is_symlink():
            old.unlink()
    for rel in [*files, MARKER]:
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged / rel, out / rel)


def export(run_dir: str | Path, fmt: str, output: str | Path, stage: str | int | None = None,
           dtype: str = "bfloat16", quantization: str = "q8_0", converter: str | Path | None = None,
           force: bool = False) -> list[Path]:
    """Export a run's stage; returns the written paths (folder, or .gguf files). Nothing is written when the stage's
    weights are damaged or ``output`` is not a folder export may write to (:func:`check_output`)."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown format '{fmt}' (allowed: {', '.join(FORMATS)})")
    name, src = find_stage(run_dir, stage)
    check_weights(name, src)
    out = Path(output).expanduser()
    check_output(out, force)
    cfg = run_config(run_dir) if fmt != "lora" else None
    log.info("exporting %s of %s (%s) as %s to %s", name, run_dir, src, fmt, out)
    staged = _atomic_dir(out)
    try:
        build = staged / "export"  # a path that does not exist yet, as every writer below expects
        if fmt == "lora":
            written = [export_lora(src, build)]
        elif fmt == "merged16":
            written = [export_merged(cfg, src, build, dtype)]
        else:
            written = export_gguf(cfg, src, build, quantization, converter)
        place(build, out, {"run": str(Path(run_dir).resolve()), "stage": name, "format": fmt})
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    return [_moved(path, build, out) for path in written]


def _moved(path: Path, build: Path, out: Path) -> Path:
    """Where ``path``, written under ``build``, lies now that ``build``'s files are in ``out``."""
    try:
        return out / Path(path).resolve().relative_to(build.resolve())
    except ValueError:  # not under build (nothing moved it)
        return Path(path)
