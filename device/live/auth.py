"""The live view's token: stored as a scrypt hash, compared in constant time, traded for a session.

The config holds only `scrypt$N$r$p$salt$key`, so a leaked config file or backup does not give the token
away. A browser trades the token once for a random session id in an HttpOnly, SameSite=Strict cookie:
the slow hash runs once per login, not once per frame or API call.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import sys
import threading
import time

from device.errors import UsageError

# scrypt's cost: N=2^14, r=8 is the interactive-login setting of the scrypt paper (16 MiB; about 0.2 s on
# the 2-core build machine), slow enough to make each guess of a token expensive.
SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
KEY_BYTES = 32
SESSION_S = 12 * 3600.0  # a kiosk or an installer's visit; after that the token is asked for again
MAX_SESSIONS = 64  # the oldest is forgotten beyond this: logins cannot grow the daemon's memory
MIN_TOKEN_CHARS = 12  # short enough to type on a phone, too long to guess at scrypt's pace


def hash_token(token: str, salt: bytes | None = None) -> str:
    """The string for `[http] token_hash`."""
    salt = salt or secrets.token_bytes(16)
    key = _derive(token, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(key)}"


def hash_token_command() -> int:
    """`appliance http hash-token`: the token comes on stdin, so it stays out of shell history and `ps`."""
    token = sys.stdin.readline().strip()
    if len(token) < MIN_TOKEN_CHARS:
        raise UsageError(
            f"give a token of at least {MIN_TOKEN_CHARS} characters on stdin, e.g. python3 -c "
            "'import secrets; print(secrets.token_urlsafe(16))' | tee token | appliance http hash-token"
        )
    print(f'token_hash = "{hash_token(token)}"')
    return 0


def verify_token(token: str, stored: str) -> bool:
    """True if `token` is the one `stored` was made from; the comparison takes the same time either way."""
    try:
        _, n, r, p, salt, key = stored.split("$")
        expected = base64.b64decode(key)
        derived = _derive(token, base64.b64decode(salt), int(n), int(r), int(p))
    except ValueError:
        return False
    return hmac.compare_digest(derived, expected)


def _derive(token: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    # maxmem: N=2^14, r=8 needs 16 MiB, a little over OpenSSL's 32 MiB default with larger settings.
    return hashlib.scrypt(token.encode(), salt=salt, n=n, r=r, p=p, dklen=KEY_BYTES, maxmem=64 * 2**20)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class Sessions:
    """Session ids handed out after a good token; in memory, so a restart logs everyone out."""

    def __init__(self, lifetime_s: float = SESSION_S) -> None:
        self.lifetime_s = lifetime_s
        self._expiry: dict[str, float] = {}
        self._lock = threading.Lock()

    def create(self) -> str:
        session = secrets.token_urlsafe(32)
        with self._lock:
            self._expiry[session] = time.monotonic() + self.lifetime_s
            while len(self._expiry) > MAX_SESSIONS:
                self._expiry.pop(next(iter(self._expiry)))
        return session

    def valid(self, session: str | None) -> bool:
        if not session:
            return False
        with self._lock:
            # A dict lookup by a 256-bit random id: timing could only tell a guess's hash bucket, not
            # bring an attacker closer to a valid id.
            expiry = self._expiry.get(session)
            if expiry is not None and expiry < time.monotonic():
                del self._expiry[session]
                return False
        return expiry is not None
