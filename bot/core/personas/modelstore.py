"""The on-disk model store: MODELS_DIR/<guild_id>/<handle>/ (a persona's first version; a later one
is <handle>.v<N>/, so the versions kept for rollback sit side by side), written atomically.

A model is built in MODELS_DIR/.staging/<unique>/ and only then renamed into place, so a
process killed mid-write leaves a staging folder (removed at start-up), never a half-written
model where the registry points. Replacing an existing model moves the old folder to
MODELS_DIR/.trash/ first; if the process dies between the two renames, start-up puts the old
one back.
"""

from __future__ import annotations

import fcntl
import io
import logging
import os
import shutil
import tarfile
import uuid
from pathlib import Path

log = logging.getLogger(__name__)

LOCK_FILE = ".lock"
STAGING = ".staging"
TRASH = ".trash"
CHECKPOINTS = ".checkpoints"
BASES = ".bases"  # GGUF files dequantized once into Hugging Face folders (core/training/bases.py)
BUNDLE_MARK = ".bundle"  # in a folder unpacked from the database: the digest it came from


class StoreError(RuntimeError):
    """The model folder could not be written (disk full, permissions...)."""


class ModelStore:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self._lock = None  # the open lock file while this process owns the store

    def lock_maintenance(self) -> None:
        """Become the one process that trains and cleans up this store, or raise StoreError.

        Start-up clean-up removes unfinished folders and the queue re-queues 'running' jobs: done
        by a second process (the CLI beside the running bot), both would undo the other's live
        work. The lock is released when the process ends, however it ends.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        handle = open(self.root / LOCK_FILE, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise StoreError(
                f"Another tweetalike process (the bot?) is training with the model store {self.root}: "
                "queue trainings through it (/train), or stop it first."
            ) from None
        self._lock = handle

    def unlock_maintenance(self) -> None:
        if self._lock is not None:
            self._lock.close()  # closing the file releases the lock
            self._lock = None

    def model_dir(self, guild_id: int, handle: str, version: int = 1) -> Path:
        # Handles are validated to [a-z0-9_-] by the registry (no dot: a version's suffix never
        # makes another handle's name); guild ids are integers.
        name = handle if version == 1 else f"{handle}.v{int(version)}"
        return self.root / str(int(guild_id)) / name

    def relative(self, path: Path) -> str:
        return str(path.relative_to(self.root))

    def resolve(self, stored_path: str) -> Path:
        """Registry paths are stored relative to the store so MODELS_DIR can move."""
        path = Path(stored_path)
        return path if path.is_absolute() else self.root / path

    def new_staging_dir(self, guild_id: int, handle: str) -> Path:
        path = self.root / STAGING / f"{int(guild_id)}-{handle}-{uuid.uuid4().hex[:12]}"
        try:
            path.mkdir(parents=True)
        except OSError as exc:
            raise StoreError(f"Cannot create a folder in the model store ({exc.strerror}).") from exc
        return path

    def publish(self, staging: Path, guild_id: int, handle: str, version: int = 1) -> Path:
        """Move a finished staging folder to its final place (replacing a folder of that version left
        by an update that died before the registry took it)."""
        final = self.model_dir(guild_id, handle, version)
        _fsync_tree(staging)
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            old = None
            if final.exists():
                old = self.root / TRASH / f"{int(guild_id)}__{handle}__{uuid.uuid4().hex[:12]}"
                old.parent.mkdir(parents=True, exist_ok=True)
                os.replace(final, old)
            os.replace(staging, final)
            _fsync_dir(final.parent)
        except OSError as exc:
            raise StoreError(f"Cannot move the new model into place ({exc.strerror}).") from exc
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def remove(self, guild_id: int, handle: str) -> None:
        """Delete every version's folder of a persona."""
        guild = self.root / str(int(guild_id))
        for folder in [guild / handle, *guild.glob(f"{handle}.v*")]:
            self.remove_folder(folder)

    def remove_folder(self, final: Path) -> None:
        """Delete a model folder: rename it away first so a half-deleted folder is never loaded."""
        if not final.exists():
            return
        doomed = self.root / TRASH / f"deleted__{uuid.uuid4().hex[:12]}"
        doomed.parent.mkdir(parents=True, exist_ok=True)
        os.replace(final, doomed)
        shutil.rmtree(doomed, ignore_errors=True)

    @property
    def bases_dir(self) -> Path:
        return self.root / BASES

    def checkpoint_dir(self, job_id: int) -> Path:
        """Where a training job keeps its resumable checkpoint (see core/training/checkpoint.py)."""
        return self.root / CHECKPOINTS / f"job-{int(job_id)}"

    def drop_checkpoint(self, job_id: int) -> None:
        shutil.rmtree(self.checkpoint_dir(job_id), ignore_errors=True)

    def drop_checkpoints_except(self, job_ids: set[int]) -> None:
        """Start-up clean-up: remove the checkpoints of jobs that will not run again."""
        root = self.root / CHECKPOINTS
        if not root.is_dir():
            return
        for entry in root.iterdir():
            job_id = entry.name.removeprefix("job-")
            if not (job_id.isdigit() and int(job_id) in job_ids):
                shutil.rmtree(entry, ignore_errors=True)
                log.info("Model store recovery: removed the checkpoint of ended %s", entry.name)

    def bundle_digest(self, folder: Path) -> str | None:
        """The digest of the archive a persona's folder was unpacked from (None: not unpacked here)."""
        try:
            return (folder / BUNDLE_MARK).read_text().strip()
        except OSError:
            return None

    def unpack(self, data: bytes, digest: str, guild_id: int, handle: str, version: int = 1) -> Path:
        """Put a persona kept in the database (see `pack`) in its place, atomically."""
        staging = self.new_staging_dir(guild_id, handle)
        try:
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
                archive.extractall(staging, filter="data")  # no paths outside the folder
            (staging / BUNDLE_MARK).write_text(digest)
            return self.publish(staging, guild_id, handle, version)
        except (OSError, tarfile.TarError) as exc:
            raise StoreError(f"Cannot unpack the model from the database ({exc}).") from exc
        finally:
            self.discard(staging)

    def discard(self, staging: Path) -> None:
        shutil.rmtree(staging, ignore_errors=True)

    def recover(self) -> list[str]:
        """Start-up clean-up after a crash. Returns what was done, for the log."""
        actions: list[str] = []
        staging_root = self.root / STAGING
        if staging_root.is_dir():
            for entry in staging_root.iterdir():
                shutil.rmtree(entry, ignore_errors=True)
                actions.append(f"removed unfinished {entry.name}")
        trash_root = self.root / TRASH
        if trash_root.is_dir():
            for entry in trash_root.iterdir():
                parts = entry.name.split("__")
                if len(parts) == 3 and parts[0].isdigit():
                    final = self.model_dir(int(parts[0]), parts[1])
                    if not final.exists():
                        # Died between moving the old version away and moving the new one in.
                        os.replace(entry, final)
                        actions.append(f"restored {final.relative_to(self.root)}")
                        continue
                shutil.rmtree(entry, ignore_errors=True)
                actions.append(f"removed leftover {entry.name}")
        for action in actions:
            log.info("Model store recovery: %s", action)
        return actions


def _fsync_tree(path: Path) -> None:
    """Flush the files to disk before the rename makes them visible."""
    for dirpath, _, filenames in os.walk(path):
        for name in filenames:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(dirpath))


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def pack(folder: Path) -> bytes:
    """A folder as one gzip'd tar (a LoRA persona or a checkpoint, kept in the database)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=1) as archive:
        for path in sorted(folder.iterdir()):
            if path.name != BUNDLE_MARK and not path.name.endswith(".tmp"):
                archive.add(path, arcname=path.name)
    return buffer.getvalue()


def unpack_into(data: bytes, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        archive.extractall(folder, filter="data")
