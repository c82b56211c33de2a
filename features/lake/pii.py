"""Personal data: where the hashing salt comes from, and keyed hashing (HMAC-SHA256) of
emails, phones and other PII so that raw values never reach the lake or the quarantine."""

from __future__ import annotations

import hmac
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc
from rich.console import Console

from custlens.errors import CustlensError
from custlens.settings import Settings

log = logging.getLogger(__name__)

SALT_ENV = "CUSTLENS_PII_SALT"


@dataclass(frozen=True)
class Salt:
    """The key of every PII hash, and where it came from (for the report, never the value)."""

    key: bytes
    origin: Literal["settings", "file", "ephemeral"]
    path: Path | None = None

    def __repr__(self) -> str:  # keep the key out of logs and tracebacks
        return f"Salt(origin={self.origin!r}, path={self.path!r})"


def salt_file(settings: Settings) -> Path:
    return settings.data_dir / "secrets" / "pii_salt"


def load_salt(settings: Settings, console: Console | None = None) -> Salt:
    """The salt from settings (CUSTLENS_PII_SALT); else the one kept in <data_dir>/secrets/pii_salt,
    created once with mode 0600 so later runs hash the same person to the same value."""
    if settings.pii_salt is not None and settings.pii_salt.get_secret_value():
        return Salt(settings.pii_salt.get_secret_value().encode("utf-8"), "settings")
    path = salt_file(settings)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another run created it in between: use theirs
            pass
        else:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(secrets.token_hex(32))
    key = path.read_text(encoding="utf-8").strip()
    if not key:
        raise CustlensError(f"the PII salt file {path} is empty; delete it to create a new one or set {SALT_ENV}")
    message = (
        f"{SALT_ENV} is not set: PII is hashed with the salt kept in {path}. "
        f"In production set {SALT_ENV} (and keep it: a new salt changes every hash)."
    )
    if console is not None:
        console.print(f"[yellow]warning:[/] {message}", highlight=False)
    else:
        log.warning(message)
    return Salt(key.encode("utf-8"), "file", path)


def hash_values(values: pa.Array | pa.ChunkedArray, salt: Salt) -> pa.Array:
    """HMAC-SHA256 (hex) of each non-null string; null stays null. Each distinct value is hashed once."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    values = values.cast(pa.string())
    distinct = pc.unique(values.drop_null())
    hashed = pa.array(
        [hmac.digest(salt.key, value.encode("utf-8"), "sha256").hex() for value in distinct.to_pylist()],
        type=pa.string(),
    )
    return pc.take(hashed, pc.index_in(values, value_set=distinct))
