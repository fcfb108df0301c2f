"""Encryption of API secrets at rest.

The gateway must know each partner's secret to check HMAC signatures, so secrets are
stored encrypted (AES-256-GCM) under a key from configuration (EXCHANGE_SECRET_KEY),
bound to their API key as associated data. A database dump alone yields no working
credentials; staff tokens, which never need to be read back, are stored as hashes."""

import hashlib
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_VERSION = b"\x01"
_NONCE_BYTES = 12


class SecretBoxError(ValueError):
    pass


class SecretBox:
    def __init__(self, key_material: str) -> None:
        if not key_material:
            raise SecretBoxError("the secret key must not be empty")
        key = hashlib.sha256(b"exchange-gateway/api-secrets/v1\0" + key_material.encode()).digest()
        self._aead = AESGCM(key)

    def encrypt(self, secret: str, *, bound_to: str) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        return _VERSION + nonce + self._aead.encrypt(nonce, secret.encode(), bound_to.encode())

    def decrypt(self, blob: bytes, *, bound_to: str) -> str:
        if len(blob) < 1 + _NONCE_BYTES or blob[:1] != _VERSION:
            raise SecretBoxError("not a sealed secret")
        nonce = blob[1 : 1 + _NONCE_BYTES]
        try:
            plain = self._aead.decrypt(nonce, blob[1 + _NONCE_BYTES :], bound_to.encode())
        except InvalidTag as exc:
            raise SecretBoxError("the secret does not open with this key") from exc
        return plain.decode()


def hash_token(token: str) -> str:
    """The stored form of a staff bearer token."""
    return hashlib.sha256(token.encode()).hexdigest()
