"""The rating web app (FastAPI): one page, a small JSON API, images by image_id only.

Access: a rater's link `/?token=...` sets an HttpOnly, SameSite=Strict cookie and redirects
to `/`; API clients may send `Authorization: Bearer <token>` instead. No token: 401; an
unknown token: 403. Every image or map is looked up by image_id among the round's
candidates, so no request path ever reaches the filesystem.
"""


import logging
from contextlib import asynccontextmanager
from functools import lru_cache
from importlib.resources import files
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field, model_validator

from madmine.config import Config
from madmine.images import ImageError
from madmine.steps.rating import render, store
from madmine.steps.rating.roundset import RoundError, RoundSet, load_map, read_image
from madmine.steps.rating.sessions import Sessions
from madmine.steps.rating.tokens import RaterRegistry
from madmine.workspace import Workspace

log = logging.getLogger("madmine.steps.rating")
COOKIE = "madmine_token"
STATIC = {
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
}
SECURITY_HEADERS = {
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'self'; img-src 'self'; style-src 'self'; script-src 'self'; frame-ancestors 'none'",
}


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


def _static(name: str) -> str:
    return files("madmine.steps.rating").joinpath("static", name).read_text(encoding="utf-8")


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def create_app(ws: Workspace, cfg: Config, rs: RoundSet) -> FastAPI:
    registry = RaterRegistry(ws)
    sessions = Sessions(ws, rs)
    models = (rs.target, *rs.competitors)
    page = _static("index.html")
    assets = {name: _static(name) for name in STATIC}

    @lru_cache(maxsize=128)
    def photo(image_id: str) -> bytes:
        data = read_image(rs.uris[image_id], cfg.storage_options, cfg.scoring.max_bytes)
        return render.display_jpeg(data, cfg.rating.display_max_side, cfg.scoring.max_pixels, cfg.scoring.decode_timeout_s)

    @lru_cache(maxsize=128)
    def label_map(model: str, image_id: str):
        return load_map(ws, model, rs.versions[model], image_id)

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

    @app.middleware("http")
    async def headers(request: Request, call_next):
        response = await call_next(request)
        response.headers.update(SECURITY_HEADERS)
        if request.url.path.startswith("/api/") and "cache-control" not in response.headers:
            response.headers["Cache-Control"] = "no-store"
        return response

    def token_of(request: Request) -> str | None:
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            return auth[7:].strip()
        return request.cookies.get(COOKIE)

    def rater(request: Request) -> str:
        token = token_of(request)
        if not token:
            raise HTTPException(401, "open your personal rating link (madmine rate add-rater NAME)",
                                headers={"WWW-Authenticate": "Bearer"})
        name = registry.lookup(token)
        if name is None:
            raise HTTPException(403, "this rating link is not valid (any more); ask for a new one")
        return name

    Rater = Annotated[str, Depends(rater)]

    def in_round(image_id: str) -> str:
        if image_id not in rs:
            raise HTTPException(404, "no such image in this round")
        return image_id

    @app.get("/healthz")
    def healthz() -> dict:
        return {"ok": True}

    @app.get("/", response_class=HTMLResponse)
    def index(request: Request, token: str | None = None):
        if token is not None:
            if registry.lookup(token) is None:
                return HTMLResponse("<h1>This rating link is not valid.</h1>", status_code=403)
            response = RedirectResponse("/", status_code=303)
            response.set_cookie(COOKIE, token, httponly=True, samesite="strict", max_age=30 * 24 * 3600)
            return response
        try:
            rater(request)
        except HTTPException as exc:
            return HTMLResponse(f"<h1>{exc.detail}</h1>", status_code=exc.status_code, headers=exc.headers)
        return HTMLResponse(page)

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
            except RoundError:
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

    @app.post("/api/ratings")
    def rate(vote: Vote, name: Rater) -> JSONResponse:
        in_round(vote.image_id)
        s, following = sessions.vote(name, vote.image_id, None if vote.out_of_domain else vote.score)
        return JSONResponse({"ok": True, "next": following, "n": len(s.order), "done": s.done})

    return app
