"""Container health check: healthy while the bot refreshes its heartbeat file.

The bot writes `<database folder>/heartbeat` every 30 s while connected to Discord
(`TweetalikeBot.heartbeat`); this exits non-zero when the file is missing or stale.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from bot.config import load_settings

STALE_AFTER = 180  # seconds


def heartbeat_path(database_path: str) -> Path:
    return Path(database_path).parent / "heartbeat"


def touch_heartbeat(database_path: str) -> None:
    """Refresh the heartbeat; its folder may not exist yet when the registry is PostgreSQL."""
    path = heartbeat_path(database_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()


def main() -> int:
    path = heartbeat_path(load_settings().database_path)
    try:
        age = time.time() - path.stat().st_mtime
    except OSError:
        sys.stderr.write(f"unhealthy: no heartbeat at {path}\n")
        return 1
    if age > STALE_AFTER:
        sys.stderr.write(f"unhealthy: last heartbeat {age:.0f}s ago\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
