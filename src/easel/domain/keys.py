"""API key format and scopes (pure).

A key looks like `easel_sk_<id>_<secret><check>`:
- `easel_sk_` makes leaked keys recognisable (secret scanners, log filters);
- `<id>` (10 base62 chars) is public: it names the key in lists and logs and finds its row;
- `<secret>` (32 base62 chars, about 190 bits) is never stored: only its SHA-256 is;
- `<check>` (6 base62 chars) is a CRC32 of everything before it, so a scanner can tell a real key from a
  random string offline, and a mistyped key is refused without a database lookup.
"""

from __future__ import annotations

import hashlib
import hmac
import zlib
from dataclasses import dataclass
from datetime import datetime

from easel.domain.errors import Forbidden

PREFIX = "easel_sk_"
ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
ID_LEN, SECRET_LEN, CHECK_LEN = 10, 32, 6

SCOPES = {
    "generations:write": "create, cancel, retry and delete generations",
    "generations:read": "read and list generations",
    "images:read": "read images and folders",
    "images:write": "upload images, create and move folders",
    "images:delete": "delete images",
    "usage:read": "read the usage report",
    "admin": "everything, including keys and projects",
}
DEFAULT_SCOPES = ("generations:write", "generations:read", "images:read", "images:write", "usage:read")


def _base62(value: int, width: int) -> str:
    out = []
    for _ in range(width):
        value, r = divmod(value, 62)
        out.append(ALPHABET[r])
    return "".join(reversed(out))


def checksum(body: str) -> str:
    return _base62(zlib.crc32(body.encode()), CHECK_LEN)


@dataclass(frozen=True)
class ParsedKey:
    key_id: str
    secret: str


def format_key(key_id: str, secret: str) -> str:
    """The plaintext key of these parts (random ones are drawn by store/keys.py's `new_key`)."""
    body = f"{PREFIX}{key_id}_{secret}"
    return body + checksum(body)


def parse(key: str) -> ParsedKey | None:
    """The parts of a well-formed key with a valid checksum; None for anything else."""
    expected = len(PREFIX) + ID_LEN + 1 + SECRET_LEN + CHECK_LEN
    if len(key) != expected or not key.isascii() or not key.startswith(PREFIX):
        return None
    body, check = key[:-CHECK_LEN], key[-CHECK_LEN:]
    key_id, sep, secret = body[len(PREFIX) :].partition("_")
    if sep != "_" or len(key_id) != ID_LEN or len(secret) != SECRET_LEN:
        return None
    if not hmac.compare_digest(checksum(body), check):
        return None
    return ParsedKey(key_id, secret)


def hash_secret(secret: str) -> str:
    """SHA-256 is right for a 190-bit random secret: nothing to brute-force, and fast to verify."""
    return hashlib.sha256(secret.encode()).hexdigest()


def allows(granted: frozenset[str] | set[str], needed: str) -> bool:
    return "admin" in granted or needed in granted


@dataclass(frozen=True)
class KeyInfo:
    """An API key's record (its secret only as a hash)."""

    id: str
    project_id: str
    name: str
    scopes: frozenset[str]
    rate_limit_per_hour: int | None
    budget_credits: float | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    secret_hash: str
    max_queued: int | None = None  # None: the server default (EASEL_MAX_QUEUED_PER_KEY); 0: unlimited


@dataclass(frozen=True)
class ProjectInfo:
    id: str
    name: str
    budget_credits: float | None
    rate_limit_per_hour: int | None
    record_parameters: bool = True
    max_queued: int | None = None  # None: the server default (EASEL_MAX_QUEUED_PER_PROJECT); 0: unlimited
    allow_high_priority: bool = False  # its keys may queue priority "high" (set by the server admin)


@dataclass(frozen=True)
class Principal:
    """Who is calling: a key of a project, with its scopes and limits. Every dialect's routes get one
    from their auth dependency and hand it to the services."""

    project_id: str
    key_id: str | None
    scopes: frozenset[str]
    rate_limit_per_hour: int | None  # None: the server default; 0: unlimited
    budget_credits: float | None
    max_queued: int | None = None  # the key's cap on its queued jobs; None: the server default
    high_priority: bool = False  # may queue priority "high" (the local project, or allowed by the admin)
    record_parameters: bool | None = None  # the project's setting, when the key lookup read it (else: ask)

    def require(self, scope: str) -> None:
        if not allows(self.scopes, scope):
            raise Forbidden(f"This API key lacks the {scope!r} scope")

    @property
    def is_admin(self) -> bool:
        return "admin" in self.scopes

    @classmethod
    def system(cls, project_id: str) -> Principal:
        """The server itself acting for a project (the CLI, tests, `--no-auth`): every scope, no key."""
        return cls(project_id, None, frozenset({"admin"}), 0, None, high_priority=True)
