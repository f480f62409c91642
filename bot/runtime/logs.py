"""Logging set-up shared by the bot and the CLI."""

from __future__ import annotations

import os


def quiet_libraries() -> None:
    """transformers' progress bars and notices are noise in a bot's log and a CLI's output."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
