"""Optional bearer-token auth, shared by the REST and gRPC front ends.

Health endpoints stay open (orchestrators probe them without credentials); everything
else needs ``Authorization: Bearer <token>`` (HTTP header or gRPC metadata). The comparison
is constant-time (``hmac.compare_digest`` on bytes), so response timing does not leak how
much of a guess was right.
"""
from __future__ import annotations

import hmac
from typing import Iterable

SCHEME = "bearer "
UNAUTHORIZED = ("missing or wrong bearer token; send the header 'Authorization: Bearer <token>' "
                "(the server's --auth-token / SUPERSERVE_AUTH_TOKEN)")


class BearerAuth:
    def __init__(self, token: str | None) -> None:
        self._expected = token.encode("ascii") if token else None

    @property
    def enabled(self) -> bool:
        return self._expected is not None

    def allows(self, authorization: str | None) -> bool:
        """Whether an ``Authorization`` value carries the token (always True without auth)."""
        if self._expected is None:
            return True
        if not authorization or authorization[:len(SCHEME)].lower() != SCHEME:
            return False
        # surrogateescape: a hostile non-ASCII header must compare unequal, not raise.
        given = authorization[len(SCHEME):].strip().encode("utf-8", "surrogateescape")
        return hmac.compare_digest(given, self._expected)

    def allows_metadata(self, metadata: Iterable[tuple[str, str | bytes]] | None) -> bool:
        """The same check on gRPC invocation metadata."""
        if self._expected is None:
            return True
        for key, value in metadata or ():
            if key == "authorization":
                if isinstance(value, bytes):
                    value = value.decode("utf-8", "surrogateescape")
                return self.allows(value)
        return False
