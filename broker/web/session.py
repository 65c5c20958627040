"""The dashboard's session: a signed cookie, its CSRF token and its flash messages.

The cookie is signed with itsdangerous (HMAC-SHA1 over a timestamped payload, the
serializer Flask and Starlette use) and scoped to ``/ops``: HttpOnly, SameSite=Strict,
Secure over HTTPS or in production. It carries no secret worth stealing: the id of the
operator's API token (never the token), a random CSRF token and pending flash
messages. Every request re-reads the token row, so revoking the token ends the session.

The signing key comes from ``settings.session_secret`` when the deployment sets one,
else from ``<data_dir>/ops-session.key`` (created once, mode 0600), so that every API
process on a host shares it and sessions survive restarts.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request, Response
from itsdangerous import BadSignature, URLSafeTimedSerializer

from ..config import Settings
from ..keys import host_key

COOKIE = "hcb_ops"
PATH = "/ops"
IDLE_S = 8 * 3600  # a session unused this long is over
ABSOLUTE_S = 24 * 3600  # and none lasts longer than this since login


@dataclass
class OpsSession:
    """One browser's session; ``token_id`` is set once an operator logged in."""

    sid: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    token_id: str | None = None
    login_at: int = 0
    flashes: list[tuple[str, str]] = field(default_factory=list)
    dirty: bool = False

    def flash(self, kind: str, message: str) -> None:
        self.flashes.append((kind, message))
        self.dirty = True

    def pop_flashes(self) -> list[tuple[str, str]]:
        out, self.flashes = self.flashes, []
        if out:
            self.dirty = True
        return out

    def check_csrf(self, token: str | None) -> bool:
        return bool(token) and secrets.compare_digest(str(token), self.csrf)

    def logged_in(self, now: float) -> bool:
        return self.token_id is not None and now - self.login_at < ABSOLUTE_S

    def log_in(self, token_id: str) -> None:
        """A fresh session id and CSRF token at login (no fixation)."""
        self.sid, self.csrf = secrets.token_urlsafe(16), secrets.token_urlsafe(32)
        self.token_id, self.login_at, self.dirty = token_id, int(time.time()), True

    def to_json(self) -> dict[str, Any]:
        return {
            "sid": self.sid,
            "csrf": self.csrf,
            "tid": self.token_id,
            "at": self.login_at,
            "fl": self.flashes,
        }

    @classmethod
    def from_json(cls, data: Any) -> OpsSession:
        if not isinstance(data, dict):
            raise ValueError("not a session")
        flashes = [(str(k), str(m)) for k, m in data.get("fl", [])][:10]
        tid = data.get("tid")
        return cls(
            sid=str(data["sid"]),
            csrf=str(data["csrf"]),
            token_id=None if tid is None else str(tid),
            login_at=int(data.get("at", 0)),
            flashes=flashes,
        )


class SessionCodec:
    """Signs and verifies session cookies."""

    def __init__(self, secret: str, *, secure: bool) -> None:
        self._serializer = URLSafeTimedSerializer(secret, salt="hcb-ops-session")
        self.secure = secure

    def load(self, cookie: str | None) -> OpsSession:
        """The session in the cookie, or a new anonymous one (bad, stale or none)."""
        if cookie:
            try:
                return OpsSession.from_json(self._serializer.loads(cookie, max_age=IDLE_S))
            except (BadSignature, ValueError, KeyError, TypeError):
                pass
        return OpsSession(dirty=True)

    def save(self, response: Response, sess: OpsSession, *, https: bool) -> None:
        response.set_cookie(
            COOKIE,
            self._serializer.dumps(sess.to_json()),
            max_age=IDLE_S,
            path=PATH,
            httponly=True,
            samesite="strict",
            secure=self.secure or https,
        )


def session_secret(settings: Settings) -> str:
    """The configured secret, else the host's key file (created on first use)."""
    return host_key(settings.data_dir, "ops-session.key", settings.session_secret)


def codec_for(request: Request) -> SessionCodec:
    """The app's codec, made on first use (no state at import time)."""
    state = request.app.state
    codec: SessionCodec | None = getattr(state, "ops_session_codec", None)
    if codec is None:
        settings: Settings = state.settings
        codec = SessionCodec(session_secret(settings), secure=settings.environment == "production")
        state.ops_session_codec = codec
    return codec


def load(request: Request) -> OpsSession:
    """This request's session (read once, kept on ``request.state``)."""
    sess: OpsSession | None = getattr(request.state, "ops_session", None)
    if sess is None:
        sess = codec_for(request).load(request.cookies.get(COOKIE))
        request.state.ops_session = sess
    return sess


def save(request: Request, response: Response, *, refresh: bool = False) -> None:
    """Write the cookie if the session changed (or to slide its idle timeout)."""
    sess: OpsSession | None = getattr(request.state, "ops_session", None)
    if sess is not None and (sess.dirty or refresh):
        codec_for(request).save(response, sess, https=request.url.scheme == "https")
