"""The server's routes, apart from the model and index holders they read (``ampere.serve.app.Service``):
the JSON API for programs (search, items, health, metrics) and the search page for people."""

from __future__ import annotations

import base64
import contextlib
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from ampere.data.frames import MediaError
from ampere.serve import media, page
from ampere.serve.parsing import BadQuery, Limits, SearchRequest, parse_search, read_fields, with_media

if TYPE_CHECKING:
    from ampere.serve.app import Metrics, Service

PAGE_K = 6  # results per gallery on the page


def preview(parsed: SearchRequest) -> str | None:
    """A data URI of the uploaded media's representative frame (shown beside its results), or None."""
    with contextlib.suppress(MediaError):
        return "data:image/jpeg;base64," + base64.b64encode(media.representative_jpeg(str(parsed.media))).decode()
    return None


class Searcher:
    """A search request read, parsed and answered (uploads written to a temporary folder for the query)."""

    def __init__(self, service: Service, metrics: Metrics, limits: Limits):
        self.service, self.metrics, self.limits = service, metrics, limits

    def _answer(self, fields: dict[str, Any], upload: UploadFile | None, with_preview: bool) -> dict[str, Any]:
        parsed, found = parse_search(fields, upload, self.limits)
        if found is None:  # an item-id query writes nothing
            return self.service.search(parsed)
        with tempfile.TemporaryDirectory(prefix="ampere-query-") as folder:
            parsed = with_media(parsed, found, Path(folder))
            result = self.service.search(parsed)
            if with_preview:
                result["query"]["preview"] = preview(parsed)
        return result

    async def __call__(self, request: Request, with_preview: bool) -> dict[str, Any]:
        fields, upload = await read_fields(request, self.limits)
        result = await run_in_threadpool(self._answer, fields, upload, with_preview)
        self.metrics.set_served(result["index_id"], result["model_version"])
        return result


def api_routes(service: Service, metrics: Metrics, searcher: Searcher) -> APIRouter:
    """The JSON API: /search, /items/{id} (with its thumbnail and media), /health and /metrics."""
    router = APIRouter()

    @router.post("/search")
    async def search(request: Request) -> JSONResponse:
        """Top-k items per gallery for an item id, or an uploaded image / video with optional text."""
        return JSONResponse(await searcher(request, with_preview=False))

    @router.get("/items/{item_id}")
    def item(item_id: str) -> dict[str, Any]:
        """An item's metadata and the links to its media and thumbnail."""
        return service.item(item_id)

    @router.get("/items/{item_id}/thumbnail")
    def thumbnail(item_id: str) -> Response:
        return Response(service.frame(item_id, media.THUMBNAIL_SIZE), media_type="image/jpeg")

    @router.get("/items/{item_id}/media")
    def item_media(item_id: str) -> Response:
        """The item's representative frame at full size (a page's image; a clip's middle frame)."""
        return Response(service.frame(item_id, None), media_type="image/jpeg")

    @router.get("/health")
    def health() -> dict[str, Any]:
        report = service.health()
        metrics.set_served(report["index_id"], report["model_version"])
        return report

    @router.get("/metrics")
    def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return router


def page_routes(service: Service, searcher: Searcher, limits: Limits) -> APIRouter:
    """The search page: by item id (``GET /?item=<id>``) or by an uploaded photo or clip (``POST /``)."""
    router = APIRouter()

    @router.get("/", response_class=HTMLResponse)
    def home(item: str | None = None, k: str = str(PAGE_K)) -> HTMLResponse:
        """The search page; with `?item=<id>`, that item's results."""
        snapshot, model = service.current()
        try:
            parsed = None if item is None else parse_search({"item_id": item, "k": k}, None, limits)[0]
            result = None if parsed is None else service.search(parsed)
        except BadQuery as error:
            return HTMLResponse(page.render(snapshot, model, None, PAGE_K, error.detail), status_code=error.status_code)
        return HTMLResponse(page.render(snapshot, model, result, result["query"]["k"] if result else PAGE_K))

    @router.post("/", response_class=HTMLResponse)
    async def home_upload(request: Request) -> HTMLResponse:
        """The search page with the results of an uploaded photo or clip."""
        try:
            result = await searcher(request, with_preview=True)
        except BadQuery as error:
            snapshot, model = service.current()
            return HTMLResponse(page.render(snapshot, model, None, limits.default_k, error.detail), status_code=error.status_code)
        snapshot, model = service.current()
        return HTMLResponse(page.render(snapshot, model, result, result["query"]["k"]))

    return router
