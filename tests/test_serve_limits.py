"""What `ampere serve` and the registered model refuse, without a model or an index: request bodies
past their limit (declared or not), deep JSON, loose fields, host paths in a pyfunc query, and
requests without a valid token once tokens are configured."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from mlflow.exceptions import MlflowException
from PIL import Image
from starlette.requests import Request

from ampere.retrieval.query import QueryError
from ampere.serve.access import TOKENS_ENV, Access, digest, is_loopback
from ampere.serve.parsing import BadQuery, Limits, parse_search, read_fields
from ampere.serve.pyfunc import MAX_MEDIA_BYTES, EncoderModel, _media_file

AMPERE = Path(sys.executable).parent / "ampere"
LIMITS = Limits(max_upload_bytes=1000, max_k=100, default_k=10)


def _request(chunks: list[bytes], content_type: str = "application/json") -> tuple[Request, list[int]]:
    """A real starlette request whose body arrives in ``chunks`` (no content-length: chunked); and how many were read."""
    pulled = [0]

    async def receive() -> dict:
        pulled[0] += 1
        more = pulled[0] < len(chunks)
        return {"type": "http.request", "body": chunks[pulled[0] - 1], "more_body": more}

    scope = {"type": "http", "method": "POST", "path": "/search", "headers": [(b"content-type", content_type.encode())]}
    return Request(scope, receive), pulled


def _refusal(coroutine) -> BadQuery:
    with pytest.raises(BadQuery) as error:
        asyncio.run(coroutine)
    return error.value


def test_an_undeclared_oversized_body_is_refused_before_it_is_read_whole():
    chunks = [b"x" * 1000] * 10_000  # 10 MB, no content-length
    request, pulled = _request(chunks)
    refused = _refusal(read_fields(request, LIMITS))
    assert refused.status_code == 413 and "limit" in refused.detail
    assert pulled[0] <= LIMITS.body_bytes // 1000 + 2  # stopped at the limit: about 67 of 10,000 chunks
    request, _ = _request([b"--x\r\n"] * 100_000, "multipart/form-data; boundary=x")
    assert _refusal(read_fields(request, LIMITS)).status_code == 413


def test_deep_json_and_loose_fields_get_a_4xx_that_does_not_repeat_them():
    request, _ = _request([b"[" * 100_000 + b"]" * 100_000])
    big = Limits(max_upload_bytes=10**6)
    refused = _refusal(read_fields(request, big))
    assert refused.status_code == 400 and "nested too deeply" in refused.detail
    cases = {
        "k fraction": ({"item_id": "a", "k": 1.9}, "k must be an integer"),
        "k bool": ({"item_id": "a", "k": True}, "k must be an integer"),
        "k list": ({"item_id": "a", "k": [3]}, "k must be an integer"),
        "huge id": ({"item_id": "x" * 1_500_000}, "item_id longer than 256 characters"),
        "id not a string": ({"item_id": {"a": 1}}, "item_id must be a string"),
        "long text": ({"image": "AAAA", "text": "t" * 30_000}, "text longer than"),
        "unknown field": ({"item_id": "a", "x" * 10_000: 1}, "unknown field"),
        "huge target": ({"item_id": "a", "target": "m" * 100_000}, "target longer than"),
    }
    for name, (fields, message) in cases.items():
        with pytest.raises(BadQuery) as error:
            parse_search(fields, None, LIMITS)
        assert error.value.status_code == 422 and message in error.value.detail, (name, error.value.detail)
        assert len(error.value.detail) < 300, name  # never echoed whole
    parsed, _ = parse_search({"item_id": " a ", "k": "7"}, None, LIMITS)  # a form's k is a string of digits
    assert parsed.item_id == "a" and parsed.k == 7


def test_a_path_in_a_pyfunc_query_gets_one_message_whether_it_exists_or_not(tmp_path):
    secret = tmp_path / "secret-photo.png"
    Image.new("RGB", (8, 8), (200, 10, 10)).save(secret)
    messages = set()
    for value in (str(secret), str(tmp_path / "missing.png"), str(tmp_path)):
        with pytest.raises(QueryError) as error:
            _media_file(value, tmp_path, 0)
        messages.add(str(error.value))
    assert len(messages) == 1 and "paths on the serving host are not read" in messages.pop()
    data = base64.b64encode(secret.read_bytes()).decode()
    assert _media_file(data, tmp_path, 0).read_bytes() == secret.read_bytes()
    with pytest.raises(QueryError, match="larger than the limit"):
        _media_file("A" * (4 * MAX_MEDIA_BYTES // 3 + 8), tmp_path, 0)
    root = tmp_path / "allowed"
    root.mkdir()
    (root / "photo.png").write_bytes(secret.read_bytes())
    assert _media_file("photo.png", tmp_path, 0, root.resolve()) == (root / "photo.png").resolve()
    with pytest.raises(QueryError) as outside:
        _media_file("../secret-photo.png", tmp_path, 0, root.resolve())  # exists, but not under the root
    with pytest.raises(QueryError) as missing:
        _media_file("nothing.png", tmp_path, 0, root.resolve())
    assert str(outside.value) == str(missing.value)


def test_a_refused_pyfunc_query_is_a_400_without_a_stack_trace(tmp_path):
    model = EncoderModel()
    model.media_root = None
    with pytest.raises(MlflowException) as error:
        model.predict(None, [{"domain": "page", "media": "/etc/passwd", "text": ""}])
    assert error.value.get_http_status_code() == 400 and "paths on the serving host" in error.value.message
    assert "Traceback" not in error.value.message and "stack_trace" not in error.value.serialize_as_json()


def test_access_tokens_from_a_digest_file_and_the_environment(tmp_path):
    tokens = tmp_path / "tokens.txt"
    tokens.write_text(f"# ops\n{digest('file-token')}\n")
    access = Access.load(tokens, {TOKENS_ENV: "env-token, other"})
    assert access.enabled and len(access.digests) == 3
    assert access.allows("/search", "file-token") and access.allows("/search", "env-token")
    assert not access.allows("/search", None) and not access.allows("/search", "wrong")
    assert access.allows("/health", None) and not Access.load(tokens, {}, guard_probes=True).allows("/health", None)
    assert not Access.load(None, {}).enabled and Access().allows("/search", None)
    tokens.write_text("file-token\n")  # a token, not its digest: refused, so it is not kept in clear
    with pytest.raises(ValueError, match="not a sha256 hex digest"):
        Access.load(tokens, {})
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ampere_serve_wants_tokens_off_loopback_and_answers_401_without_one(tmp_path):
    store, env = tmp_path / "index_store", {k: v for k, v in os.environ.items() if k != TOKENS_ENV}
    common = ["--store", str(store), "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db", "--cache", str(tmp_path / "c.sqlite")]
    refused = subprocess.run([str(AMPERE), "serve", "--host", "0.0.0.0", *common], env=env, capture_output=True, text=True)
    assert refused.returncode != 0 and "give API tokens" in refused.stderr
    port = _free_port()
    server = subprocess.Popen(  # on every interface: tokens required, given by the environment
        [str(AMPERE), "serve", "--host", "0.0.0.0", "--port", str(port), *common],
        env={**env, TOKENS_ENV: "s3cret-token"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                health = requests.get(url + "/health", timeout=10)
                break
            except requests.ConnectionError:
                assert server.poll() is None
                time.sleep(0.5)
        assert health.status_code == 503  # open without a token; no index served yet
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic czNjcmV0LXRva2Vu"}):
            answer = requests.post(url + "/search", json={"item_id": "a"}, headers=headers, timeout=10)
            assert answer.status_code == 401 and answer.json()["status"] == 401, answer.text
            assert answer.headers["www-authenticate"] == "Bearer"
        token = {"Authorization": "Bearer s3cret-token"}
        allowed = requests.post(url + "/search", json={"item_id": "a"}, headers=token, timeout=10)
        assert allowed.status_code == 503 and "no index is served yet" in allowed.json()["error"]
        assert requests.get(url + "/no-such-route", timeout=10).json() == {"error": "Not Found", "status": 404}
    finally:
        server.terminate()
        output = server.communicate(timeout=30)[0]
    assert "s3cret-token" not in output
