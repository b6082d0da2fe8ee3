"""Who may see what: signed run links (`?t=`), the browsing token (shared, or the one a local
`jobbot serve` prints), and Slack sign-in."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field

from aiohttp import web

from core.links import Links, origin_of, secrets_equal
from core.models import Source
from core.policy import Actor
from web.sessions import Signer, Viewer

SESSION_COOKIE = "jobbot_session"  # the shared token's cookie
USER_COOKIE = "jobbot_user"  # a person signed in with Slack
LOGIN_COOKIE = "jobbot_signin"  # a sign-in under way: its state and nonce
USER_TTL = 12 * 3600
LOGIN_TTL = 10 * 60


@dataclass(frozen=True)
class Access:
    """Checks a request's right to a run page or to the job list, and says who is asking."""

    links: Links
    # JOBBOT_WEB_TOKEN, or the token a local `jobbot serve` made at start: for browsing /jobs;
    # None turns browsing off.
    web_token: str | None
    secure_cookies: bool
    # Set when web_token is the local one: whoever holds it read the terminal of the person
    # who started jobbot on this machine, so their browser acts as that operator (as the CLI).
    local_operator: str | None = None
    users: Signer = field(init=False)
    logins: Signer = field(init=False)

    def __post_init__(self) -> None:
        # Keys of their own, so a run link's token or a sign-in cookie never passes as a session.
        object.__setattr__(self, "users", Signer(self.links.subkey("web-user"), "user"))
        object.__setattr__(self, "logins", Signer(self.links.subkey("web-login"), "login"))

    def session_value(self) -> str | None:
        """What the browsing cookie holds: derived from the token, so a new token logs all out."""
        if not self.web_token:
            return None
        return hmac.new(self.web_token.encode(), b"jobbot-web-session",
                        hashlib.sha256).hexdigest()

    def viewer(self, request: web.Request) -> Viewer | None:
        """The person signed in with Slack (a valid, unexpired session cookie), if any."""
        return Viewer.from_values(self.users.loads(request.cookies.get(USER_COOKIE)))

    def actor(self, request: web.Request) -> Actor:
        """Who acts from a page: the signed-in Slack user, the local operator, else nobody core
        policy accepts."""
        viewer = self.viewer(request)
        if viewer is None and self.local_operator and self.is_browser(request):
            return Actor(id=f"local:{self.local_operator}", source=Source.WEB,
                         display=self.local_operator, operator=True)
        if viewer is None:
            # A signed link says which run, not who clicked it.
            return Actor(id="web:link-holder", source=Source.WEB,
                         display="someone with the run link")
        return Actor(id=f"slack:{viewer.slack_user}", source=Source.WEB, display=viewer.name,
                     slack_user=viewer.slack_user)

    def is_browser(self, request: web.Request) -> bool:
        """May browse /jobs: signed in with Slack, or with the shared token's cookie."""
        if self.viewer(request) is not None:
            return True
        expected = self.session_value()
        given = request.cookies.get(SESSION_COOKIE, "")
        return expected is not None and secrets_equal(given, expected)

    def identified(self, request: web.Request) -> bool:
        """Someone core policy can decide about: signed in with Slack, or the local operator."""
        return self.viewer(request) is not None or self.actor(request).operator

    def token_given(self, request: web.Request) -> bool | None:
        """Whether `?token=` is the browsing token; None when the URL carries none."""
        if "token" not in request.query:
            return None
        given = request.query.get("token", "")
        return bool(self.web_token) and secrets_equal(given, self.web_token or "")

    def wrong_token(self) -> str:
        """Why a `?token=` was refused, and where the right one is."""
        if self.local_operator:
            return ("The token in this link is wrong or from an earlier start of jobbot: open "
                    "the link `jobbot serve` printed in its terminal (a new one is made at "
                    "every start).")
        if self.web_token:
            return "The token in this link is wrong: open the page with ?token=<JOBBOT_WEB_TOKEN>."
        return ("This jobbot has no browsing token: set JOBBOT_WEB_TOKEN or Sign in with Slack "
                "(SLACK_CLIENT_ID) to browse jobs.")

    def same_origin(self, request: web.Request) -> bool:
        """A form post from jobbot's own pages (CSRF): see `same_origin`."""
        return same_origin(request, self.links.public_origin)

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

    def set_session(self, response: web.StreamResponse, viewer: Viewer) -> None:
        response.set_cookie(USER_COOKIE, self.users.dumps(viewer.values(), USER_TTL),
                            httponly=True, samesite="Lax", secure=self.secure_cookies,
                            max_age=USER_TTL, path="/")

    def clear_session(self, response: web.StreamResponse) -> None:
        response.del_cookie(USER_COOKIE, path="/")


def same_origin(request: web.Request, public_origin: str | None) -> bool:
    """A form post from this site (CSRF): the origin of Origin, else of Referer, must be
    jobbot's public origin (JOBBOT_PUBLIC_URL: a proxy in front may rewrite Host); only when
    that is not known, the host the request was sent to."""
    source = request.headers.get("Origin") or request.headers.get("Referer")
    given = origin_of(source) if source and source != "null" else None
    if given is None:
        return False
    if public_origin is not None:
        return given == public_origin
    scheme = given.partition(":")[0]
    return given == origin_of(f"{scheme}://{request.host}")
