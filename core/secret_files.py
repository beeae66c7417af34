"""Writing a secret to a file: mode 0600 from the first byte, atomically, durably.  One home for what
the signing key (``core.signing``) and the key-encryption key (``core.data_keys``) both need."""

from __future__ import annotations

import os
import uuid
from pathlib import Path


def write_secret_file(path: Path, data: bytes, replace: bool) -> None:
    """Write ``data`` to ``path`` (mode 0600) atomically, fsynced; unless ``replace``, only if ``path`` is
    absent (a concurrent first start keeps whichever file landed first: the link refuses to overwrite)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    descriptor = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(descriptor, data)
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    try:
        if replace:
            tmp.replace(path)
        else:
            os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
