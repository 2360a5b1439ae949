"""What a search request may carry and how it is read: the body read up to a limit whatever it
declares (JSON, multipart, chunked or not), JSON parsed without unbounded recursion, every field
checked strictly and never echoed whole, and one error shape (`BadQuery`) for every refusal."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from fastapi import HTTPException, Request
from starlette.datastructures import UploadFile

from ampere.data.format import DOMAINS
from ampere.serve import media

TARGETS = (*DOMAINS, "all")
FIELDS = ("item_id", "k", "target", "domain", "text", "image", "video")
MAX_ID_CHARS = 256
MAX_TEXT_CHARS = 20_000
ENVELOPE_BYTES = 64 * 1024  # what a body may hold beyond its media: fields, multipart headers, JSON syntax
SHOWN_CHARS = 64  # at most this much of a refused value is repeated in the message
Media = tuple[bytes, str]  # an uploaded query's bytes and the file suffix it is decoded by


class BadQuery(HTTPException):
    """A request the server refuses with a 4xx status and a message naming the reason."""

    def __init__(self, status: int, message: str):
        super().__init__(status_code=status, detail=message)


@dataclass(frozen=True)
class Limits:
    """What one request may hold."""

    max_upload_bytes: int = 20 * 2**20
    max_k: int = 100
    default_k: int = 10

    @property
    def body_bytes(self) -> int:
        """The largest body read: the media as base64 (4 bytes per 3) plus the envelope."""
        return 4 * (self.max_upload_bytes // 3 + 1) + ENVELOPE_BYTES


@dataclass(frozen=True)
class SearchRequest:
    """A parsed search: an indexed item, or media (a file on disk) with optional text."""

    target: str
    k: int
    item_id: str | None = None
    media: Path | None = None
    domain: str | None = None
    text: str = ""


def shown(value: str) -> str:
    """``value`` quoted for a message, cut to `SHOWN_CHARS` characters."""
    if len(value) <= SHOWN_CHARS:
        return repr(value)
    return f"{value[:SHOWN_CHARS]!r}… ({len(value):,} characters)"


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, read chunk by chunk and refused (413) as soon as it passes ``limit`` bytes,
    declared or not: an oversized body is never held whole."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BadQuery(413, f"request larger than the limit of {limit:,} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BadQuery(413, f"request larger than the limit of {limit:,} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _replayed(request: Request, body: bytes) -> Request:
    """A request reading ``body`` (already read and bounded) as its stream, for the form parser."""
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return Request(request.scope, receive)


async def read_fields(request: Request, limits: Limits) -> tuple[dict[str, Any], UploadFile | None]:
    """The request's fields and its uploaded file, from multipart/form or JSON; 4xx for anything else."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind not in ("multipart/form-data", "application/x-www-form-urlencoded", "application/json"):
        raise BadQuery(415, f"unsupported content type {shown(kind or 'none')}: send JSON or multipart/form-data")
    body = await read_body(request, limits.body_bytes)
    if kind != "application/json":
        form = await _replayed(request, body).form(max_files=1, max_fields=len(FIELDS) + 1)
        upload = next((value for value in form.values() if isinstance(value, UploadFile) and value.filename), None)
        return {key: value for key, value in form.items() if isinstance(value, str)}, upload
    try:
        fields = json.loads(body)
    except RecursionError:
        raise BadQuery(400, "the JSON body is nested too deeply: send one flat object") from None
    except ValueError:
        raise BadQuery(400, "the body is not valid JSON") from None
    if not isinstance(fields, dict):
        raise BadQuery(422, "the JSON body must be an object")
    return fields, None


def _text(fields: dict[str, Any], name: str, limit: int) -> str:
    """A string field ("" when absent), at most ``limit`` characters."""
    value = fields.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise BadQuery(422, f"{name} must be a string, got {type(value).__name__}")
    if len(value) > limit:
        raise BadQuery(422, f"{name} longer than {limit:,} characters ({len(value):,})")
    return value


def _k(value: Any, limits: Limits) -> int:
    """An integer k in [1, max_k]: a JSON integer or a form field of digits; never a bool or a fraction."""
    if value is None or value == "":
        return limits.default_k
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadQuery(422, f"k must be an integer, got {shown(str(value))}")
    if not 1 <= value <= limits.max_k:
        raise BadQuery(422, f"k must be between 1 and {limits.max_k}, got {value}")
    return value


def _choice(fields: dict[str, Any], name: str, choices: tuple[str, ...], default: str | None) -> str | None:
    value = _text(fields, name, SHOWN_CHARS)
    if value == "":
        return default
    if value not in choices:
        raise BadQuery(422, f"unknown {name} {shown(value)}: expected one of {', '.join(choices)}")
    return value


def _media_bytes(fields: dict[str, Any], upload: UploadFile | None, limit: int) -> Media | None:
    """The query media's bytes and file suffix (from a multipart file, or base64 `image` / `video` in JSON)."""
    if upload is not None:
        data = upload.file.read(limit + 1)
        suffix = media.upload_suffix(upload.filename or "", upload.content_type or "")
        if suffix is None:
            named = f"{shown(upload.filename or '')} ({shown(upload.content_type or '')})"
            raise BadQuery(415, f"unsupported upload {named}: send an image or a video")
    else:
        kind = next((key for key in ("image", "video") if fields.get(key)), None)
        if kind is None:
            return None
        encoded = _text(fields, kind, 4 * (limit // 3 + 1))
        try:
            data = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise BadQuery(422, f"{kind} is not valid base64") from None
        suffix = ".png" if kind == "image" else ".mp4"
    if len(data) > limit:
        raise BadQuery(413, f"media larger than the limit of {limit:,} bytes")
    if not data:
        raise BadQuery(422, "the uploaded media is empty")
    return data, suffix


def parse_search(fields: dict[str, Any], upload: UploadFile | None, limits: Limits) -> tuple[SearchRequest, Media | None]:
    """A `SearchRequest` from request fields, and the query media's bytes and suffix (None for an
    item-id query); `with_media` gives the request its media file."""
    unknown = sorted(set(fields) - set(FIELDS))
    if unknown:
        raise BadQuery(422, f"unknown field {shown(unknown[0])}: a search takes {', '.join(FIELDS)}")
    target = _choice(fields, "target", TARGETS, "all")
    k = _k(fields.get("k"), limits)
    item_id = _text(fields, "item_id", MAX_ID_CHARS).strip() or None
    domain = _choice(fields, "domain", DOMAINS, None)
    text = _text(fields, "text", MAX_TEXT_CHARS)
    found = _media_bytes(fields, upload, limits.max_upload_bytes)
    if item_id is not None:
        if found is not None:
            raise BadQuery(422, "give either item_id or media, not both")
        return SearchRequest(target, k, item_id=item_id), None
    if found is None:
        if text.strip():
            raise BadQuery(422, "a text-only query cannot be embedded: the model reads media with their text; add media")
        raise BadQuery(422, "empty query: give item_id, or an image or a video (with optional text)")
    return SearchRequest(target, k, domain=domain, text=text), found


def with_media(request: SearchRequest, found: Media, folder: Path) -> SearchRequest:
    """The request with its media written into ``folder`` (decoders read files)."""
    data, suffix = found
    path = folder / f"query{suffix}"
    path.write_bytes(data)
    return replace(request, media=path)
