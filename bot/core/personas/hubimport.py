"""Bringing a fine-tuned model in from the Hugging Face hub (or a local mirror of it): the id
check at the edge, the download into a staging folder, and the check that it is a causal LM."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

from bot.core.errors import UserError

HUB_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
# What a causal-LM folder needs; anything else on the hub repo (TF/Flax weights...) is skipped.
IMPORT_PATTERNS = ["*.json", "*.safetensors", "*.bin", "*.txt", "*.model", "README.md"]


def check_hub_id(repo: str) -> str:
    repo = (repo or "").strip()
    if not HUB_ID_RE.match(repo) or ".." in repo:
        raise UserError("Give a Hugging Face model id like `huggingtweets/js_thrill`.")
    return repo


def fetch_repo(repo: str, target: Path, local_mirror: str | None) -> None:
    """Copy `repo` into `target`, from `local_mirror/<repo>` when it has one, else the hub."""
    mirror = Path(local_mirror) / repo if local_mirror else None
    if mirror is not None and mirror.is_dir():
        shutil.copytree(mirror, target, dirs_exist_ok=True)
        return
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        snapshot_download(repo_id=repo, local_dir=target, allow_patterns=IMPORT_PATTERNS)
    except RepositoryNotFoundError:
        raise UserError(f"There is no model `{repo}` on the Hugging Face hub (or it is private).") from None
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as exc:
        raise UserError(
            f"Could not download `{repo}` from the Hugging Face hub ({exc.__class__.__name__})."
        ) from None


def check_loadable(folder: Path) -> dict[str, Any]:
    """Refuse a folder that is not a text-generation model, before it is registered."""
    if (folder / "adapter_config.json").is_file():
        config = json.loads((folder / "adapter_config.json").read_text())
        return {"adapter": True, "base_model": config.get("base_model_name_or_path")}
    if not (folder / "config.json").is_file():
        raise UserError("That repository has no model in it (no config.json).")
    from transformers import AutoConfig, AutoTokenizer

    try:
        config = AutoConfig.from_pretrained(folder)
        AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError) as exc:
        raise UserError(f"That repository is not a usable model ({exc.__class__.__name__}).") from None
    if not any(a.endswith("LMHeadModel") or a.endswith("ForCausalLM") for a in config.architectures or []):
        raise UserError("That model is not a text-generation model (GPT-2 style).")
    return {"adapter": False, "base_model": getattr(config, "_name_or_path", None)}
