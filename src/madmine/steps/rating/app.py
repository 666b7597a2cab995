"""The rating web app (FastAPI): one page, a small JSON API, images by image_id only.

Access: a rater's link is `/login#<code>`, with a one-time sign-in code (steps/rating/logins.py).
The code sits in the fragment, which browsers never send to a server or a proxy log; the
login page takes it out of the address bar and exchanges it (POST /api/login, JSON
{"code": ...}) for a session in an HttpOnly, SameSite=Strict cookie, Secure when served
behind TLS. The code is used up by the exchange, so the copy of the link the browser keeps
in its history opens nothing. API clients send the rater's API token as
`Authorization: Bearer <token>` with every request instead (or POST it to /api/login for a
session). No credential: 401; an unknown, used or revoked one: 403. Every image or map is
looked up by image_id among the round's candidates, so no request path ever reaches the
filesystem.

Requests are hostile input too: a body over [rating] max_body_bytes is refused (413) before
it is read; a request that changes state (a vote, signing in or out) is refused (403) when
the browser says it comes from another origin (Origin, Sec-Fetch-Site: another port of the
same host included, which SameSite cookies do not stop), and its body must be
application/json (415), which no page of another origin can send without the browser asking
first; a vote's body is parsed only after the credential is checked, and a 422 names the
field that is wrong without ever echoing what was sent.
"""

import json
import logging
from contextlib import asynccontextmanager
from functools import lru_cache
from importlib.resources import files
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from madmine.config import Config
from madmine.images import ImageError
from madmine.steps.rating import logins, render, store
from madmine.steps.rating.roundset import RoundError, RoundSet, read_image
from madmine.steps.rating.sessions import Sessions
from madmine.steps.rating.tokens import RaterError, RaterRegistry
from madmine.workspace import Workspace

log = logging.getLogger("madmine.steps.rating")
COOKIE = "madmine_token"
COOKIE_MAX_AGE = logins.SESSION_DAYS * 24 * 3600
STATIC = {
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
    "login.js": "text/javascript; charset=utf-8",
}
SECURITY_HEADERS = {
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'self'; img-src 'self'; style-src 'self'; script-src 'self'; frame-ancestors 'none'",
}
FOREIGN = "refused: this request comes from another site (its Origin is not this rating app)"
VOTE_HINT = 'send {"image_id": "...", "score": 1..5} or {"image_id": "...", "out_of_domain": true}'
USED_LINK = "this sign-in link was used already, or is not valid (any more): ask for a new one (madmine rate link NAME)"


class Vote(BaseModel):
    """A score on the ACR scale, or out of domain: exactly one of the two."""

    model_config = ConfigDict(extra="forbid")
    image_id: str = Field(min_length=1, max_length=128)
    score: Annotated[int, Field(strict=True, ge=1, le=5)] | None = None
    out_of_domain: Annotated[bool, Field(strict=True)] = False

    @model_validator(mode="after")
    def _one_of(self) -> "Vote":
        if (self.score is None) == (not self.out_of_domain):
            raise ValueError("send either score (1..5) or out_of_domain: true, not both and not neither")
        return self


class BodyTooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware: refuse a body over `max_bytes` before reading it (Content-Length), or as
    soon as a chunked body passes the limit."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for key, value in scope.get("headers", []):
            if key == b"content-length":
                if not value.isdigit() or int(value) > self.max_bytes:
                    return await _too_large(send, self.max_bytes)
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge
            return message

        return await self.app(scope, limited, send)


async def _too_large(send, max_bytes: int) -> None:
    body = json.dumps({"detail": f"request body over {max_bytes} bytes"}).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


def _static(name: str) -> str:
    return files("madmine.steps.rating").joinpath("static", name).read_text(encoding="utf-8")


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _problems(errors) -> list[dict]:
    """Pydantic's errors without the input: where (our own field names only) and what kind."""
    out = []
    for error in errors[:10]:
        loc = [p for p in error.get("loc", ()) if isinstance(p, int) or p in ("body", "path", "query", "header", "cookie")
               or p in Vote.model_fields or p in ("k", "image_id", "model", "name")]
        out.append({"loc": loc, "type": str(error.get("type", "invalid"))[:40]})
    return out


def create_app(ws: Workspace, cfg: Config, rs: RoundSet, *, behind_tls: bool | None = None) -> FastAPI:
    registry = RaterRegistry(ws)
    sessions = Sessions(ws, rs)
    models = (rs.target, *rs.competitors)
    page = _static("index.html")
    login_page = _static("login.html")
    assets = {name: _static(name) for name in STATIC}
    tls = cfg.rating.behind_tls if behind_tls is None else behind_tls

    @lru_cache(maxsize=128)
    def photo(image_id: str) -> bytes:
        data = read_image(rs.uris[image_id], cfg.storage_options, cfg.scoring.max_bytes)
        return render.display_jpeg(data, cfg.rating.display_max_side, cfg.scoring.max_pixels, cfg.scoring.decode_timeout_s)

    @lru_cache(maxsize=128)
    def label_map(model: str, image_id: str):
        return rs.load_map(model, image_id)

    @lru_cache(maxsize=512)
    def overlay(model: str, image_id: str) -> bytes:
        return render.overlay_png(label_map(model, image_id), cfg.colors)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        try:
            store.materialise(ws, rs.round)
        except Exception:  # a failed refresh loses nothing: the events are the ratings
            log.exception("could not materialise the ratings table of round %s", rs.round)

    app = FastAPI(title="madmine rating", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.add_middleware(BodyLimit, max_bytes=cfg.rating.max_body_bytes)

    @app.middleware("http")
    async def headers(request: Request, call_next):
        response = await call_next(request)
        response.headers.update(SECURITY_HEADERS)
        if request.url.path.startswith("/api/") and "cache-control" not in response.headers:
            response.headers["Cache-Control"] = "no-store"
        return response

    @app.exception_handler(BodyTooLarge)
    async def body_too_large(_request: Request, _exc: BodyTooLarge) -> JSONResponse:
        return JSONResponse({"detail": f"request body over {cfg.rating.max_body_bytes} bytes"}, status_code=413,
                            headers={"Connection": "close"})

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": "invalid request", "errors": _problems(exc.errors())}, status_code=422)

    @app.exception_handler(OSError)
    async def storage_down(_request: Request, exc: OSError) -> JSONResponse:
        log.error("rating storage: %s", exc)
        return JSONResponse({"detail": "the rating storage cannot be written or read; nothing was stored, try again"},
                            status_code=503)

    def bearer_of(request: Request) -> str | None:
        auth = request.headers.get("authorization", "")
        return auth[7:].strip() if auth.lower().startswith("bearer ") else None

    def rater(request: Request) -> str:
        """The rater of an API token (Authorization: Bearer) or of a session cookie."""
        token, session = bearer_of(request), request.cookies.get(COOKIE)
        if not token and not session:
            raise HTTPException(401, "open your personal rating link (madmine rate link NAME)",
                                headers={"WWW-Authenticate": "Bearer"})
        name = registry.lookup(token) if token else logins.session_rater(ws, session)
        if name is None:
            raise HTTPException(403, "this rating link or session is not valid (any more); ask for a new link")
        return name

    Rater = Annotated[str, Depends(rater)]

    def origins(request: Request) -> set[str]:
        """This app's own origin as the request reached it, and the public one behind a proxy."""
        own = {f"{request.url.scheme}://{request.url.netloc}".lower()}
        if cfg.rating.public_url:
            public = urlsplit(cfg.rating.public_url)
            own.add(f"{public.scheme}://{public.netloc}".lower())
        return own

    def from_this_site(request: Request) -> None:
        """A request that changes state must not come from another origin: browsers say where
        a request comes from (Origin on every POST, Sec-Fetch-Site), and a page cannot lie."""
        site = request.headers.get("sec-fetch-site")
        if site is not None and site not in ("same-origin", "none"):
            raise HTTPException(403, FOREIGN)
        origin = request.headers.get("origin")
        if origin is not None and origin.rstrip("/").lower() not in origins(request):
            log.warning("refused a %s from origin %.100r (this app is %s): behind a proxy that serves it under another "
                        "name, set [rating] public_url to that address", request.url.path, origin,
                        " or ".join(sorted(origins(request))))
            raise HTTPException(403, FOREIGN)

    def json_only(request: Request) -> None:
        """Only application/json: a form or a no-cors fetch of another page cannot send it."""
        kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if kind != "application/json":
            raise HTTPException(415, "send the body as application/json")

    FromThisSite = [Depends(from_this_site)]

    def in_round(image_id: str) -> str:
        if image_id not in rs:
            raise HTTPException(404, "no such image in this round")
        return image_id

    @app.get("/healthz")
    async def healthz() -> dict:
        # on the event loop, not in the thread pool: it answers even while slow storage holds every thread
        return {"ok": True}

    @app.get("/", response_class=HTMLResponse)
    def index(request: Request):
        try:
            rater(request)
        except HTTPException as exc:
            return HTMLResponse(f"<h1>{exc.detail}</h1>", status_code=exc.status_code, headers=exc.headers)
        return HTMLResponse(page)

    @app.get("/login", response_class=HTMLResponse)
    def login_form() -> HTMLResponse:
        return HTMLResponse(login_page)

    @app.post("/api/login", dependencies=FromThisSite)
    async def login(request: Request) -> JSONResponse:
        """A one-time code (the link's, as JSON {"code": ...}) or an API token (Bearer) in, a session cookie out."""
        token = bearer_of(request)
        if token:
            name = await run_in_threadpool(registry.lookup, token)
            if name is None:
                raise HTTPException(403, "this API token is not valid (any more)")
        else:
            body = await request.body()
            if not body and "content-type" not in request.headers:
                raise HTTPException(401, "open your personal rating link (madmine rate link NAME)",
                                    headers={"WWW-Authenticate": "Bearer"})
            json_only(request)
            try:
                sent = json.loads(body, parse_constant=_no_constant)
            except (ValueError, RecursionError):
                sent = None
            code = sent.get("code") if isinstance(sent, dict) else None
            if not isinstance(code, str) or not code:
                return JSONResponse({"detail": 'send {"code": "<the code after # in the link>"}',
                                     "errors": [{"loc": ["body", "code"], "type": "missing"}]}, status_code=422)
            name = await run_in_threadpool(logins.redeem_code, ws, code)
            if name is None:
                raise HTTPException(403, USED_LINK)
        try:
            session = await run_in_threadpool(logins.open_session, ws, name)
        except RaterError:  # revoked in the instant between the check and the session
            raise HTTPException(403, USED_LINK) from None
        response = JSONResponse({"ok": True, "rater": name})
        response.set_cookie(COOKIE, session, httponly=True, samesite="strict", max_age=COOKIE_MAX_AGE,
                            secure=tls or request.url.scheme == "https", path="/")
        return response

    @app.post("/api/logout", dependencies=FromThisSite)
    def logout(request: Request) -> JSONResponse:
        logins.close_session(ws, request.cookies.get(COOKIE))
        response = JSONResponse({"ok": True})
        response.delete_cookie(COOKIE, path="/")
        return response

    @app.get("/static/{name}")
    def static(name: str) -> Response:
        if name not in assets:
            raise HTTPException(404, "not found")
        return Response(assets[name], media_type=STATIC[name])

    @app.get("/api/session")
    def session(name: Rater) -> dict:
        s = sessions.get(name)
        return {
            "rater": name,
            "round": rs.round,
            "n": len(s.order),
            "done": s.done,
            "resume": s.first_unrated(),
            "target": rs.target,
            "competitors": list(rs.competitors),
            "classes": [{"id": k, "name": c, "color": _hex(cfg.colors[k])} for k, c in enumerate(cfg.classes)],
            "acr": {str(k): word for k, word in store.ACR.items()},
        }

    @app.get("/api/items/{k}")
    def item(k: int, name: Rater) -> dict:
        s = sessions.get(name)
        if not 0 <= k < len(s.order):
            raise HTTPException(404, f"no item {k}; items are 0..{len(s.order) - 1}")
        image_id = s.order[k]
        present = {}
        for model in models:
            try:
                present[model] = render.classes_present(label_map(model, image_id), cfg.num_classes)
            except (RoundError, ImageError):
                present[model] = []
        return {
            "k": k,
            "n": len(s.order),
            "done": s.done,
            "image_id": image_id,
            "rated": image_id in s.scores,
            "score": s.scores.get(image_id),
            "classes_present": present[rs.target],
            "competitor_classes": {m: present[m] for m in rs.competitors},
        }

    @app.get("/api/images/{image_id}")
    def image(image_id: str, name: Rater) -> Response:
        in_round(image_id)
        try:
            data = photo(image_id)
        except (RoundError, ImageError) as exc:
            raise HTTPException(404, f"image cannot be shown: {exc}") from exc
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})

    @app.get("/api/maps/{model}/{image_id}")
    def prediction(model: str, image_id: str, name: Rater) -> Response:
        in_round(image_id)
        if model not in models:
            raise HTTPException(404, "no such model in this round")
        try:
            data = overlay(model, image_id)
        except (RoundError, ImageError) as exc:
            raise HTTPException(404, f"prediction cannot be shown: {exc}") from exc
        return Response(data, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})

    @app.post("/api/ratings", dependencies=FromThisSite)
    async def rate(request: Request, name: Rater) -> JSONResponse:
        # the origin (FromThisSite) and the credential (Rater) were checked before a byte of the body is read
        json_only(request)
        body = await request.body()
        try:
            vote = Vote.model_validate(json.loads(body, parse_constant=_no_constant))
        except (ValueError, RecursionError) as exc:  # not JSON (NaN and Infinity included), or nested too deep
            errors = exc.errors() if isinstance(exc, ValidationError) else [{"loc": ["body"], "type": "json_invalid"}]
            return JSONResponse({"detail": VOTE_HINT, "errors": _problems(errors)}, status_code=422)
        in_round(vote.image_id)
        s, following = await run_in_threadpool(sessions.vote, name, vote.image_id, None if vote.out_of_domain else vote.score)
        return JSONResponse({"ok": True, "next": following, "n": len(s.order), "done": s.done})

    return app
