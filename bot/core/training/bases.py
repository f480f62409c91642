"""Which base model a name means: a Hugging Face hub id, a local model folder, or a GGUF file.

A `.gguf` file is what users of llama.cpp, Ollama or LM Studio have on disk. transformers reads it
(`from_pretrained(folder, gguf_file=name)`, with the `gguf` package) and dequantizes it, which takes
a while and gives a model its own `save_pretrained` refuses to write. So it is dequantized once into
a plain Hugging Face folder under MODELS_DIR/.bases/, named after the file and keyed by its sha256,
written to a temporary folder and renamed into place (a process killed half-way leaves nothing that
looks finished); later trainings and generation load that folder.

`check_base` is the edge: what transformers cannot read (not a GGUF, truncated, an architecture or
a quantization type it does not support) is refused with a short reason, before anything is queued.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from bot.core.errors import TrainingError, UserError

log = logging.getLogger(__name__)

GGUF_SUFFIX = ".gguf"
GGUF_MAGIC = b"GGUF"
SOURCE_FILE = "gguf_source.json"  # in a prepared folder: the file it came from, and its sha256
_HASH_CHUNK = 8 << 20
_digests: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256, for this process


def is_gguf(name: str | os.PathLike | None) -> bool:
    return bool(name) and str(name).lower().endswith(GGUF_SUFFIX)


@dataclass(frozen=True)
class GgufBase:
    """A GGUF file accepted as a base."""

    path: Path
    architecture: str
    sha256: str

    @property
    def label(self) -> str:
        """How the registry, the card and /models info name the base: file name and content."""
        return f"{self.path.name} (sha256 {self.sha256})"

    @property
    def folder_name(self) -> str:
        return f"{self.path.stem}-{self.sha256[:16]}"


def check_base(name: str) -> str:
    """The base a request names, as it is to be stored: a GGUF file is checked and made absolute
    (a worker or a later run finds it whatever its working directory); other names pass as they
    are (transformers says whether a hub id or folder loads, when the training starts)."""
    if not is_gguf(name):
        return name
    return str(inspect_gguf(name).path)


def inspect_gguf(name: str | os.PathLike) -> GgufBase:
    """Read a GGUF file's header and say whether transformers can dequantize it, or raise UserError."""
    path = Path(name).expanduser().resolve()

    def refuse(reason: str) -> UserError:
        return UserError(f"`{path.name}` cannot be used as a base model: {reason}.")

    if not path.is_file():
        raise refuse("there is no such file on this machine")
    try:
        with path.open("rb") as handle:
            magic = handle.read(4)
    except OSError as exc:
        raise refuse(f"it cannot be read ({exc.strerror})") from None
    if magic != GGUF_MAGIC:
        raise refuse("it is not a GGUF file (it does not start with `GGUF`)")
    try:
        from gguf import GGUFReader
    except ImportError:
        raise refuse("the `gguf` package is not installed") from None
    try:
        reader = GGUFReader(path)
        architecture = str(reader.fields["general.architecture"].contents())
        tensors = list(reader.tensors)
    except (ValueError, KeyError, IndexError, OSError, UnicodeDecodeError):
        raise refuse("the file is truncated or damaged (its header or tensors cannot be read)") from None
    if tensors and max(t.data_offset + t.n_bytes for t in tensors) > path.stat().st_size:
        raise refuse("the file is truncated (its tensors end past the end of the file)")
    _check_readable(architecture, {t.tensor_type.name for t in tensors}, refuse)
    return GgufBase(path=path, architecture=architecture, sha256=file_sha256(path))


def _check_readable(architecture: str, types: set[str], refuse) -> None:
    from gguf.quants import _type_traits
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    if architecture not in GGUF_SUPPORTED_ARCHITECTURES:
        known = ", ".join(sorted(a for a in GGUF_SUPPORTED_ARCHITECTURES if "encoder" not in a))
        raise refuse(f"its architecture `{architecture}` is not one transformers reads ({known})")
    readable = {"F32", "F16"} | {t.name for t in _type_traits}
    unknown = sorted(types - readable)
    if unknown:
        raise refuse(f"its quantization type {', '.join(unknown)} cannot be dequantized by the gguf package")


def file_sha256(path: Path) -> str:
    """The file's sha256, hashed once per process and file version (large files take seconds)."""
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _digests:
        digest, done, last_log = hashlib.sha256(), 0, time.monotonic()
        with path.open("rb") as handle:
            while chunk := handle.read(_HASH_CHUNK):
                digest.update(chunk)
                done += len(chunk)
                if time.monotonic() - last_log > 5:
                    log.info("Hashing %s: %d%%", path.name, 100 * done // max(stat.st_size, 1))
                    last_log = time.monotonic()
        _digests[key] = digest.hexdigest()
    return _digests[key]


def default_bases_dir() -> Path:
    """Where GGUF bases go when no model store is given (the bench, a bare `train()`)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "tweetalike" / "bases"


def describe(name: str) -> str:
    """The base as the registry and the card record it: a GGUF file by name and sha256."""
    return inspect_gguf(name).label if is_gguf(name) else name


def loadable(name: str, bases_dir: str | os.PathLike) -> str:
    """What `from_pretrained` is given for this base: a GGUF file's prepared folder, else the name."""
    if not is_gguf(name):
        return name
    try:
        base = inspect_gguf(name)
    except UserError as exc:  # the file changed or went away since the job was queued
        raise TrainingError(str(exc)) from None
    return str(prepare_gguf(base, Path(bases_dir)))


def prepare_gguf(base: GgufBase, bases_dir: Path) -> Path:
    """The Hugging Face folder of a GGUF base, dequantized now unless an earlier run did it."""
    final = bases_dir / base.folder_name
    if (final / SOURCE_FILE).is_file():
        return final
    bases_dir.mkdir(parents=True, exist_ok=True)
    with open(bases_dir / f".{base.sha256[:16]}.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one dequantization per file, across processes
        if (final / SOURCE_FILE).is_file():  # another process finished it while this one waited
            return final
        for stale in bases_dir.glob(f".tmp-{base.folder_name}-*"):  # a killed run's leftovers
            shutil.rmtree(stale, ignore_errors=True)
        temp = bases_dir / f".tmp-{base.folder_name}-{uuid.uuid4().hex[:8]}"
        try:
            _dequantize_into(base, temp)
            shutil.rmtree(final, ignore_errors=True)  # a folder without its source file is unfinished
            os.replace(temp, final)
        except OSError as exc:
            raise TrainingError(f"Could not write the dequantized base {base.path.name} ({exc}).") from exc
        finally:
            shutil.rmtree(temp, ignore_errors=True)
    return final


def _dequantize_into(base: GgufBase, folder: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.monotonic()
    log.info(
        "Dequantizing the GGUF base %s (%s) once into %s", base.path.name, base.architecture, folder.parent
    )
    try:
        tokenizer = AutoTokenizer.from_pretrained(base.path.parent, gguf_file=base.path.name)
        quantized = AutoModelForCausalLM.from_pretrained(base.path.parent, gguf_file=base.path.name)
    except (OSError, ValueError, KeyError, NotImplementedError) as exc:
        raise TrainingError(
            f"transformers could not read the GGUF base {base.path.name} ({exc.__class__.__name__}: {exc})."
        ) from exc
    log.info(
        "Read %s in %.0f s; saving it as a Hugging Face folder", base.path.name, time.monotonic() - started
    )
    # A model loaded from GGUF carries a quantization config that save_pretrained refuses; its
    # weights are plain (dequantized) tensors, so a model built from the same config takes them.
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(quantized.state_dict())
    folder.mkdir(parents=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    source = {"file": base.path.name, "sha256": base.sha256, "architecture": base.architecture}
    (folder / SOURCE_FILE).write_text(json.dumps(source, indent=2))
    for path in folder.iterdir():  # on disk before the rename makes the folder visible
        with path.open("rb") as handle:
            os.fsync(handle.fileno())
    log.info("GGUF base %s ready in %.0f s", base.path.name, time.monotonic() - started)


def gguf_source(folder: str | os.PathLike) -> dict | None:
    """The GGUF file a prepared base folder came from (file, sha256), or None for other bases."""
    try:
        return json.loads((Path(folder) / SOURCE_FILE).read_text())
    except (OSError, ValueError):
        return None
