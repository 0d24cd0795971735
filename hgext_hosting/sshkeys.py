"""SSH public keys: parsing an OpenSSH ``authorized_keys`` line and its SHA256 fingerprint.

Parsing is done by ``cryptography`` (which Twisted Conch uses too); we only split
the line and refuse key types and sizes that are not safe today.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import dsa, rsa
from cryptography.hazmat.primitives.serialization import load_ssh_public_key

from .errors import Invalid

#: The key types we accept, as OpenSSH names them.
ACCEPTED_TYPES = frozenset(
    {
        "ssh-ed25519",
        "ssh-rsa",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "sk-ssh-ed25519@openssh.com",
        "sk-ecdsa-sha2-nistp256@openssh.com",
    }
)
MIN_RSA_BITS = 2048


class BadKey(Invalid, ValueError):
    """A key that cannot be registered; the message is fit for a user."""

    def __init__(self, message: str, field: str = "key"):
        super().__init__(message, field)


@dataclass(frozen=True)
class PublicKey:
    """A parsed public key: its type, the base64 blob, comment and fingerprint."""

    type: str
    blob: str
    comment: str

    @property
    def fingerprint(self) -> str:
        return fingerprint_of_blob(base64.b64decode(self.blob))

    @property
    def openssh(self) -> str:
        """The key as one ``authorized_keys`` line without options."""
        return f"{self.type} {self.blob}" + (f" {self.comment}" if self.comment else "")


def fingerprint_of_blob(blob: bytes) -> str:
    """OpenSSH's ``SHA256:...`` fingerprint of a raw key blob."""
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode("ascii")
    return "SHA256:" + digest.rstrip("=")


def parse_public_key(text: str) -> PublicKey:
    """Parse one OpenSSH public key line (``TYPE BASE64 [COMMENT]``) or raise BadKey."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    if len(lines) != 1:
        raise BadKey("expected exactly one public key line in OpenSSH format")
    fields = lines[0].split(None, 2)
    if len(fields) < 2:
        raise BadKey("not an OpenSSH public key (expected 'TYPE BASE64 [COMMENT]')")
    key_type, blob_text = fields[0], fields[1]
    comment = fields[2] if len(fields) > 2 else ""
    if key_type not in ACCEPTED_TYPES:
        raise BadKey(f"unsupported key type {key_type[:40]!r}")
    try:
        blob = base64.b64decode(blob_text, validate=True)
    except (binascii.Error, ValueError):
        raise BadKey("the key data is not valid base64") from None
    if _blob_type(blob) != key_type:
        raise BadKey("the key data does not match its type")
    if not key_type.startswith("sk-"):
        try:
            key = load_ssh_public_key(f"{key_type} {blob_text}".encode("ascii"))
        except (ValueError, TypeError):
            raise BadKey("the key data is not a valid public key") from None
        if isinstance(key, dsa.DSAPublicKey):
            raise BadKey("DSA keys are not accepted")
        if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS:
            raise BadKey(f"RSA keys must have at least {MIN_RSA_BITS} bits")
    return PublicKey(type=key_type, blob=blob_text, comment=comment)


def _blob_type(blob: bytes) -> str | None:
    """The type name written at the start of a key blob (an SSH string)."""
    if len(blob) < 4:
        return None
    size = int.from_bytes(blob[:4], "big")
    if size > 64 or len(blob) < 4 + size:
        return None
    try:
        return blob[4 : 4 + size].decode("ascii")
    except UnicodeDecodeError:
        return None
