"""Who may see what: signed run links (`?t=`), and a shared token for browsing (a cookie)."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp import web

from core.links import Links

SESSION_COOKIE = "jobbot_session"


@dataclass(frozen=True)
class Access:
    """Checks a request's right to a run page or to the job list."""

    links: Links
    # JOBBOT_WEB_TOKEN: one shared token for browsing /jobs; None turns browsing off.
    web_token: str | None
    secure_cookies: bool

    def session_value(self) -> str | None:
        """What the browsing cookie holds: derived from the token, so a new token logs all out."""
        if not self.web_token:
            return None
        return hmac.new(self.web_token.encode(), b"jobbot-web-session",
                        hashlib.sha256).hexdigest()

    def is_browser(self, request: web.Request) -> bool:
        """Signed in with the shared token (the cookie set on a visit with `?token=`)."""
        expected = self.session_value()
        given = request.cookies.get(SESSION_COOKIE, "")
        return expected is not None and hmac.compare_digest(given, expected)

    def token_given(self, request: web.Request) -> bool:
        given = request.query.get("token", "")
        return bool(self.web_token) and hmac.compare_digest(given, self.web_token or "")

    def run_token(self, request: web.Request, run_id: str) -> str | None:
        """A token valid for this run's page, or None: the link's own, or one for a browser."""
        given = request.query.get("t", "")
        if given and self.links.verify(run_id, given):
            return given
        if self.is_browser(request):
            return self.links.token(run_id)
        return None

    def sign_in(self, response: web.StreamResponse) -> None:
        value = self.session_value()
        if value is not None:
            response.set_cookie(SESSION_COOKIE, value, httponly=True, samesite="Lax",
                                secure=self.secure_cookies, max_age=30 * 24 * 3600, path="/")


def same_origin(request: web.Request) -> bool:
    """A form post from this site (CSRF): Origin, else Referer, must name this host."""
    source = request.headers.get("Origin") or request.headers.get("Referer")
    if not source or source == "null":
        return False
    return urlsplit(source).netloc == request.host
