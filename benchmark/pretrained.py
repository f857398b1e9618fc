"""Loading a pretrained causal LM (a local folder or a hub id) with errors that say which and why.

transformers reports a missing folder as "Repo id must be in the form 'repo_name'" (it took the
path for a hub id) and a truncated weights file as a safetensors header error that names no file;
here a local folder is checked before transformers reads it, and every failure is one
`UserError` line naming the model and the file.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from benchmark.errors import UserError, first_line
from benchmark.tensor_files import check_safetensors


def could_be_hub_id(ref: str) -> bool:
    """Whether `ref` is spelled like a hub repository id (`name` or `org/name`); a path such as
    `/data/math` or `./math` is not, and a missing one is then a missing folder, not a bad repo id."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(ref)
    except HFValidationError:
        return False
    return not ref.startswith((".", "~"))


def check_model_ref(ref: str, what: str) -> None:
    """Refuse a local model folder that cannot be one (a file, no config.json, a truncated
    safetensors file) or a path that does not exist and is no hub id; reads headers only."""
    folder = Path(ref)
    if folder.exists():
        if not folder.is_dir():
            raise UserError(f"{what} {ref} is a file; a model is a folder (config.json and weights) or a hub id")
        if not (folder / "config.json").is_file():
            raise UserError(f"{what} {ref}: no config.json in it, so it is not a saved model folder")
        for weights in sorted(folder.glob("*.safetensors")):
            check_safetensors(weights, f"{what} weights file")
    elif not could_be_hub_id(ref):
        raise UserError(f"{what} {ref} does not exist (give a model folder or a hub id)")


def load_causal_lm(ref: str, what: str, revision: str | None = None, dtype: object = "auto") -> nn.Module:
    """`AutoModelForCausalLM.from_pretrained(ref)` in eval mode, or one line saying why not; `what`
    names the model's role in the message (`--base`, `suite base`)."""
    from transformers import AutoModelForCausalLM

    check_model_ref(ref, what)
    try:
        return AutoModelForCausalLM.from_pretrained(ref, revision=revision, dtype=dtype).eval()
    except Exception as err:  # a hub id not cached offline, an architecture transformers lacks, ...
        raise UserError(f"{what} {ref}: cannot load it as a causal language model ({first_line(err)})") from err
