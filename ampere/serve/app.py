"""`ampere serve`: cross-domain search over the served index, for programs (JSON) and people (a page).

The served index is the one `CURRENT` names in the index store (`IndexReader` follows it); the
model that embeds queries is the registered version that index's manifest names, so a query is
always embedded by the model whose vectors it is searched against. Promotion moves the champion
alias and `CURRENT` together, rollback moves `CURRENT` back: both are picked up without a restart,
and a background thread loads the next index and model before requests need them.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.exceptions import HTTPException as StarletteHTTPException

from ampere.data.frames import DecodeLimits, MediaError, is_video
from ampere.retrieval.index_store import IndexReader, IndexSnapshot
from ampere.retrieval.query import Query, QueryError
from ampere.serve import media
from ampere.serve.access import Access
from ampere.serve.models import CatalogueItems, ModelUnavailableError, RegistryModels, ServedModel
from ampere.serve.parsing import BadQuery, Limits, SearchRequest, shown
from ampere.serve.routes import Searcher, api_routes, page_routes

logger = logging.getLogger(__name__)


@dataclass
class ServeConfig:
    """Where the served index and the registry are, and the limits a request must keep."""

    index_store: str | Path  # a folder or an object-store URL
    tracking_uri: str
    summary_cache: str | Path  # a SQLite file or a PostgreSQL URL
    limits: Limits = field(default_factory=Limits)
    access: Access = field(default_factory=Access)  # no tokens: loopback only (`ampere serve` refuses otherwise)
    decoding: DecodeLimits = field(default_factory=DecodeLimits)  # each query's media
    follow_every_s: float = 1.0


class Service:
    """The served pair (index, model) and the searches over it."""

    def __init__(self, config: ServeConfig):
        self.config = config
        self.reader = IndexReader(config.index_store)
        self.models = RegistryModels(config.tracking_uri, config.summary_cache, decoding=config.decoding)
        self._served: tuple[IndexSnapshot, ServedModel, CatalogueItems] | None = None
        self.unservable: dict[str, str] = {}  # index id -> why its model cannot be served (the last pair is kept)

    def current(self) -> tuple[IndexSnapshot, ServedModel]:
        """The served index and the model its vectors came from. When CURRENT names an index whose
        model cannot be loaded, the last good pair keeps serving (the reason is in `unservable`);
        503 only when there has never been one."""
        try:
            snapshot = self.reader.snapshot()
        except (LookupError, OSError, ValueError) as error:
            raise BadQuery(503, f"no index is served yet: {error}") from error
        served = self._served
        if served is not None and served[0] is snapshot:
            return served[:2]
        try:
            model = self._model_for(snapshot)
        except BadQuery as error:
            if served is None:
                raise
            if self.unservable.get(snapshot.index_id) != error.detail:
                logger.warning("still serving %s: %s", served[0].index_id, error.detail)
                self.unservable[snapshot.index_id] = error.detail
            return served[:2]
        # A refreshed index holds items the model never saw: their records come from the index's own dataset.
        items = CatalogueItems.read(snapshot.about.get("dataset") or model.lineage["dataset"], model.lineage)
        self._served = snapshot, model, items
        self.unservable.pop(snapshot.index_id, None)
        return snapshot, model

    def items(self) -> CatalogueItems:
        """The records of the served index's items."""
        self.current()
        assert self._served is not None  # current() raised otherwise
        return self._served[2]

    def _model_for(self, snapshot: IndexSnapshot) -> ServedModel:
        name, version = snapshot.about.get("registered_model"), snapshot.about.get("model_version")
        if name is None or version is None:
            raise BadQuery(503, f"index {snapshot.index_id} does not name its registered model and version: re-run faiss_index")
        try:
            return self.models.get(name, version)
        except ModelUnavailableError as error:
            raise BadQuery(503, f"index {snapshot.index_id}: {error}") from error

    def follow(self, stop: threading.Event) -> None:
        """Loads each new index and its model as soon as CURRENT moves (until ``stop``)."""
        while not stop.wait(self.config.follow_every_s):
            with contextlib.suppress(BadQuery):
                self.current()

    def search(self, request: SearchRequest) -> dict[str, Any]:
        """Top-k items of each target gallery for one query, with their metadata."""
        started = time.perf_counter()
        snapshot, model = self.current()
        if request.item_id is not None:
            found = snapshot.find(request.item_id)
            if found is None:
                raise BadQuery(404, f"unknown item id {shown(request.item_id)}: not in index {snapshot.index_id}")
            domain, vector = found
        else:
            domain = request.domain or ("short" if is_video(request.media) else "page")
            try:
                vector = model.embed([Query(domain, request.media, request.text)])[0]
            except (QueryError, MediaError) as error:
                raise BadQuery(422, str(error).replace(str(request.media), "the uploaded media")) from error
        targets = [d for d in snapshot.domains if request.target in ("all", d)]
        results = {}
        for target in targets:
            own = request.item_id is not None and target == domain
            hits = snapshot.search(target, vector[None, :], request.k + own)[0]
            hits = [hit for hit in hits if hit[0] != request.item_id][: request.k]
            results[target] = [self._hit(self.items(), target, *hit) for hit in hits]
        return {
            "query": {
                "item_id": request.item_id,
                "domain": domain,
                "text": request.text,
                "target": request.target,
                "k": request.k,
            },
            "index_id": snapshot.index_id,
            "model_version": model.version,
            "data_version": snapshot.about.get("data_version"),
            "results": results,
            "took_ms": round((time.perf_counter() - started) * 1000, 3),
        }

    @staticmethod
    def _hit(items: CatalogueItems, domain: str, item_id: str, product_id: str, score: float) -> dict[str, Any]:
        return {
            "item_id": item_id,
            "product_id": product_id,
            "domain": domain,
            "score": round(score, 6),
            "title": items.titles.get(item_id, ""),
            "thumbnail": f"/items/{item_id}/thumbnail",
        }

    def item(self, item_id: str) -> dict[str, Any]:
        """An item's metadata from the served model's dataset; 404 when unknown."""
        snapshot, _ = self.current()
        items = self.items().items
        if item_id not in items.index:
            raise BadQuery(404, f"unknown item id {shown(item_id)}")
        row = items.loc[item_id]
        found = snapshot.find(item_id)
        return {
            **{key: str(row[key]) for key in ("item_id", "product_id", "domain", "title", "asr", "split")},
            "indexed": found is not None,
            "media": f"/items/{item_id}/media",
            "thumbnail": f"/items/{item_id}/thumbnail",
        }

    def frame(self, item_id: str, size: int | None) -> bytes:
        """JPEG of an item's representative frame; 404 when the item or its media are gone."""
        items = self.items().items
        if item_id not in items.index:
            raise BadQuery(404, f"unknown item id {shown(item_id)}")
        try:
            return media.item_jpeg(str(items.loc[item_id, "media_path"]), size)
        except (MediaError, OSError) as error:
            raise BadQuery(404, f"item {item_id}: media unreadable: {error}") from error

    def health(self) -> dict[str, Any]:
        """What is served: index, model and data versions, gallery sizes, and where the champion alias is."""
        snapshot, model = self.current()
        return {
            "status": "ok",
            "index_id": snapshot.index_id,
            "model_version": model.version,
            "data_version": snapshot.about.get("data_version"),
            "champion_version": self.models.champion(snapshot.about["registered_model"]),
            "registered_model": snapshot.about["registered_model"],
            "text_source": model.lineage.get("text_source"),
            "galleries": {domain: int(gallery.index.ntotal) for domain, gallery in snapshot.domains.items()},
            "not_served": dict(self.unservable),  # indexes CURRENT named whose model could not be loaded
        }


class Metrics:
    """Prometheus figures of one app: requests by route and status, latency, the served versions."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("ampere_requests", "HTTP requests", ["route", "method", "status"], registry=self.registry)
        self.latency = Histogram(
            "ampere_request_seconds",
            "Request latency",
            ["route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.served = Gauge(
            "ampere_served_index", "1 for the served index", ["index_id", "model_version"], registry=self.registry
        )
        self._served: tuple[str, str] | None = None

    def set_served(self, index_id: str, model_version: str) -> None:
        if self._served != (index_id, model_version):
            if self._served is not None:
                self.served.remove(*self._served)
            self._served = (index_id, model_version)
            self.served.labels(index_id, model_version).set(1)


class _Measured:
    """ASGI middleware counting every HTTP request by route template and status, and timing it."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), [500]

        async def sending(message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.latency.labels(route).observe(time.perf_counter() - started)
            self.metrics.requests.labels(route, scope["method"], str(status[0])).inc()


MALLOC_ARENAS = 2  # glibc's default, 8 per core, lets each request thread keep its own freed memory


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Caps glibc's malloc arenas (`mallopt(M_ARENA_MAX)`, as `MALLOC_ARENA_MAX` would) before the server's
    threads start, so memory freed by one request thread is reused by the others instead of each thread's
    arena growing on its own. False where the C library is not glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    return bool(libc.mallopt(-8, arenas))  # -8: M_ARENA_MAX


BEARER = HTTPBearer(auto_error=False)


async def _authorised(request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]) -> None:
    """Every route's guard: a valid bearer token, when the app's `Access` has tokens (401 otherwise)."""
    if not request.app.state.access.allows(request.url.path, credentials.credentials if credentials else None):
        message = "a valid API token is required (Authorization: Bearer <token>)"
        raise StarletteHTTPException(401, message, headers={"WWW-Authenticate": "Bearer"})


def create_app(config: ServeConfig) -> FastAPI:
    """The FastAPI application over one index store and one registered model."""
    service = Service(config)
    metrics = Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        stop = threading.Event()
        follower = threading.Thread(target=service.follow, args=(stop,), name="ampere-follow", daemon=True)
        follower.start()
        yield
        stop.set()
        follower.join(timeout=5)

    app = FastAPI(title="AMPere retrieval", lifespan=lifespan, dependencies=[Depends(_authorised)])
    app.state.access = config.access
    app.add_middleware(_Measured, metrics=metrics)

    @app.exception_handler(StarletteHTTPException)  # FastAPI's, this API's and routing's (404, 405)
    async def refused(request: Request, error: StarletteHTTPException) -> JSONResponse:
        body = {"error": str(error.detail), "status": error.status_code}
        return JSONResponse(body, status_code=error.status_code, headers=getattr(error, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors()[:3])
        return JSONResponse({"error": f"invalid request: {problems}", "status": 422}, status_code=422)

    searcher = Searcher(service, metrics, config.limits)
    app.include_router(api_routes(service, metrics, searcher))
    app.include_router(page_routes(service, searcher, config.limits))
    return app

