"""Crash-safe file writes: everything a later step reads is written to a temporary file and renamed.

A SIGKILL at any moment leaves either the old file or the new one, never a truncated one.

Every JSON file rethink writes is strict JSON (RFC 8259): a number that is not defined (NaN, such as COCO's AP for
an object size the val set lacks, or an infinity) is written as null, which any parser reads. Reading one back, a
null metric (a key with a slash: `bbox/APl`) becomes NaN again, the value the code computes with.
"""

import json
import math
import os
import pickle
import shutil
import tempfile
from pathlib import Path

from rethink.errors import reason


def _default_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


_FILE_MODE = _default_mode()

def _fsync_dir(directory: Path) -> None:
    # The rename is only durable once the directory entry is flushed too.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _FILE_MODE)  # mkstemp makes owner-only files; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def strict(obj):
    """`obj` with every NaN and infinity replaced by None (JSON null: not defined)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict(v) for v in obj]
    return obj


def strict_json(obj, **kwargs) -> str:
    """json.dumps with NaN and infinities as null; allow_nan=False makes anything missed an error, not a bad file."""
    return json.dumps(strict(obj), allow_nan=False, **kwargs)


def _undefined_as_nan(obj):
    """A null metric (a key with a slash, as `bbox/APl`) back to NaN, the "not defined" the code computes with."""
    if isinstance(obj, dict):
        return {k: (math.nan if v is None and isinstance(k, str) and "/" in k else _undefined_as_nan(v))
                for k, v in obj.items()}
    if isinstance(obj, list):
        return [_undefined_as_nan(v) for v in obj]
    return obj


def atomic_write_json(path, obj) -> None:
    atomic_write_text(path, strict_json(obj, indent=2, sort_keys=True) + "\n")


def atomic_save_with(path, save_fn) -> None:
    """Atomically write a file produced by `save_fn(tmp_path)` (torch.save, safetensors' save_file...)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_fn(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def read_json(path):
    with open(path, encoding="utf-8") as f:
        return _undefined_as_nan(json.load(f))


def read_jsonl(path) -> list:
    """Read a JSON-lines file, dropping a last line cut short by a crash."""
    rows = []
    path = Path(path)
    if not path.exists():
        return rows
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.endswith("\n"):
                break  # partial write from a killed process
            line = line.strip()
            if line:
                try:
                    rows.append(_undefined_as_nan(json.loads(line)))
                except json.JSONDecodeError as exc:
                    # report the file's line, not the line within the one-line document
                    raise json.JSONDecodeError(exc.msg, "\n" * (number - 1) + line, number - 1 + exc.pos) from None
    return rows


def write_jsonl_text(rows) -> str:
    """The JSON-lines text of `rows`, one sorted-key object per line (what append_jsonl writes)."""
    return "".join(strict_json(row, sort_keys=True) + "\n" for row in rows)


def append_jsonl(path, obj) -> None:
    # One write call per line, flushed: a crash can at most leave one partial last line, which read_jsonl drops.
    with open(path, "a", encoding="utf-8") as f:
        f.write(write_jsonl_text([obj]))
        f.flush()


def check_free_space(directory, needed_bytes: int, what: str) -> None:
    from rethink.errors import UserError

    free = shutil.disk_usage(directory).free
    if free < needed_bytes:
        raise UserError(
            f"{directory}: only {free / 2**20:.0f} MiB free, {what} needs about {needed_bytes / 2**20:.0f} MiB; "
            "free some space and run the same command again (nothing was lost)"
        )


def load_failure(path: Path, exc: BaseException) -> str:
    """Why torch.load(weights_only=True) failed, in words about the file. Torch's own message for a refused file
    tells the user to retry with weights_only=False, which would run the file's code: never repeat that advice."""
    kind = _not_a_torch_file(path)
    if kind:
        return kind
    if isinstance(exc, pickle.UnpicklingError):
        return "it holds Python objects beyond tensors, and loading them could run code"
    return reason(exc, 200)


def _not_a_torch_file(path: Path) -> str | None:
    """A description of a file that is plainly no torch file (torch writes a zip archive, or a pickle)."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError:
        return None
    if not head:
        return "the file is empty"
    if head.startswith(b"PK") or head[:1] == b"\x80":
        return None
    if head.lstrip()[:1] in (b"{", b"["):
        return "it is a JSON file, not a torch file"
    if head.startswith(b"\x89PNG") or head.startswith(b"\xff\xd8"):
        return "it is an image, not a torch file"
    return None
