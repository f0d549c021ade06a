"""HTTP backend: any image-embedding API as a black box (``pip install auditmi[http]``).

``http:CONFIG.toml`` (keys in :mod:`auditmi.encoders.http_config`) or ``http:URL`` (defaults).
Views are rendered on the client at ``input_size`` in [0, 1] (the encoder's mean is 0 and its
std 1), quantised to 8 bits and sent as lossless PNG, so the service's own resizing and JPEG
re-encoding never touch them. Requests go out ``max_batch`` views at a time, ``concurrency`` at
once, at most ``max_rps`` per second, and are retried with exponential backoff on 429, 5xx,
timeouts and connection errors, honouring ``Retry-After``. 401 and 403 stop at once (exit 4).

Nothing is lost: the pipeline caches the features of every finished batch of images, so a
scan stopped by an outage resumes where it stopped. Secrets (header values and ``${NAME}``
values in the URL) are redacted from every error message and never enter the cache key.
"""

from __future__ import annotations

import base64
import concurrent.futures as cf
import email.utils
import io
import logging
import threading
import time
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import numpy as np
import torch

from auditmi.encoders.base import Encoder
from auditmi.encoders.http_config import (
    HttpConfig,
    expand,
    identity,
    over_budget_error,
    parse_embeddings,
    plan,
    read_config,
    redact_url,
    request_body,
    url_config,
)
from auditmi.errors import EncoderUnavailableError

__all__ = ["HttpEmbedder", "load_config", "load_http", "over_budget_error", "plan"]


class _Retryable(Exception):
    """A failure worth retrying (429, 5xx, timeout, connection error)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class _RedactFilter(logging.Filter):
    """Redacts an embedder's secrets from httpx/httpcore log records (they log request URLs)."""

    def __init__(self, embedder: HttpEmbedder) -> None:
        super().__init__()
        self.embedder = embedder

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        red = self.embedder.redact(msg)
        if red != msg:
            record.msg, record.args = red, ()
        return True


def _redact_logs(embedder: HttpEmbedder) -> None:
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).addFilter(_RedactFilter(embedder))


def to_png_b64(views: torch.Tensor) -> list[str]:
    """(B, 3, S, S) images in [0, 1] -> base64 PNGs of their 8-bit quantisation."""
    from PIL import Image

    arr = (views.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy())
    out = []
    for a in arr:
        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(a)).save(buf, format="PNG", compress_level=1)
        out.append(base64.b64encode(buf.getvalue()).decode("ascii"))
    return out


class HttpEmbedder:
    """Sends views to the service and returns their embeddings (the Encoder's ``forward``)."""

    def __init__(self, cfg: HttpConfig) -> None:
        import httpx

        self.cfg = cfg
        self.where = cfg.source if cfg.source != "url" else redact_url(cfg.url)
        self.url, secrets = expand(cfg.url, "the url")
        self.headers: dict[str, str] = {}
        for k, v in cfg.headers.items():
            self.headers[k], s = expand(v, f"header {k}")
            secrets += s if "${" in v else [v]  # literal header values are secrets too
        # Query values of the URL may be keys too (?api_key=...): treat them all as secrets.
        secrets += [v for _, v in parse_qsl(urlsplit(self.url).query, keep_blank_values=True)]
        self._secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)
        _redact_logs(self)
        self.client = httpx.Client(timeout=cfg.timeout, headers=self.headers,
                                   limits=httpx.Limits(max_connections=cfg.concurrency, max_keepalive_connections=cfg.concurrency))
        self._lock = threading.Lock()
        self._next_slot = 0.0
        self.requests_sent = 0
        self.views_sent = 0

    def redact(self, text: str) -> str:
        """``text`` with every secret value replaced by ``***``."""
        for s in self._secrets:
            text = text.replace(s, "***")
        return text

    def _wait_for_slot(self) -> None:
        if self.cfg.max_rps <= 0:
            return
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next_slot)
            self._next_slot = slot + 1.0 / self.cfg.max_rps
        if slot > now:
            time.sleep(slot - now)

    def _post(self, body: dict[str, Any], n: int) -> list[list[float]]:
        import httpx

        self._wait_for_slot()
        with self._lock:
            if self.cfg.budget_requests and self.requests_sent >= self.cfg.budget_requests:
                raise EncoderUnavailableError(
                    f"the query budget of {self.cfg.budget_requests} requests set in {self.where} is spent (retries count). "
                    "Embedded images are cached: raise budget_requests and re-run to resume."
                )
            self.requests_sent += 1
        try:
            r = self.client.post(self.url, json=body)
        except httpx.TimeoutException as e:
            raise _Retryable(f"timed out after {self.cfg.timeout:g} s ({type(e).__name__})") from None
        except httpx.TransportError as e:
            raise _Retryable(f"connection error ({type(e).__name__}: {self.redact(str(e))[:200]})") from None
        if r.status_code in (401, 403):
            raise EncoderUnavailableError(
                f"the embedding service at {redact_url(self.cfg.url)} refused the request with HTTP {r.status_code} "
                f"({'unauthorised' if r.status_code == 401 else 'forbidden'}): check the credentials in the headers of "
                f"{self.where} (values written as ${{NAME}} are read from the environment variable NAME)."
            )
        if r.status_code == 429 or r.status_code >= 500:
            raise _Retryable(f"HTTP {r.status_code}", _retry_after(r.headers.get("retry-after")))
        if r.status_code >= 400:
            raise EncoderUnavailableError(
                f"the embedding service at {redact_url(self.cfg.url)} answered HTTP {r.status_code}: "
                f"{self.redact(r.text)[:300]!r}. Check protocol ({self.cfg.protocol}), model and input_size in {self.where}."
            )
        try:
            return parse_embeddings(self.cfg, r.json(), n)
        except ValueError as e:
            raise EncoderUnavailableError(
                f"unexpected answer from {redact_url(self.cfg.url)} ({e}); check that protocol = {self.cfg.protocol!r} "
                f"in {self.where} matches the service (presets: openai, cohere, jina)."
            ) from None

    def _wait(self, state: Any) -> float:
        import tenacity

        exc = state.outcome.exception() if state.outcome else None
        ra = getattr(exc, "retry_after", None)
        backoff = (tenacity.wait_exponential(multiplier=self.cfg.backoff, max=self.cfg.backoff_max)
                   + tenacity.wait_random(0, self.cfg.backoff))(state)
        # Retry-After is honoured, up to 10 minutes (a broken header must not stall a scan for hours).
        return min(float(ra), 600.0) if ra is not None else float(backoff)

    def _send(self, pngs: list[str]) -> list[list[float]]:
        import tenacity

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(_Retryable), stop=tenacity.stop_after_attempt(self.cfg.retries + 1),
            wait=self._wait, reraise=True,
        )
        try:
            return retrying(self._post, request_body(self.cfg, pngs), len(pngs))
        except _Retryable as e:
            raise EncoderUnavailableError(
                f"the embedding service at {redact_url(self.cfg.url)} kept failing ({self.redact(str(e))}) after "
                f"{self.cfg.retries + 1} attempts. Images embedded so far are cached: re-run the same command to resume, "
                f"or raise retries / timeout in {self.where}."
            ) from None

    def __call__(self, views: torch.Tensor) -> torch.Tensor:
        pngs = to_png_b64(views)
        chunks = [pngs[i:i + self.cfg.max_batch] for i in range(0, len(pngs), self.cfg.max_batch)]
        with self._lock:
            self.views_sent += len(pngs)
        if len(chunks) == 1 or self.cfg.concurrency == 1:
            rows = [r for c in chunks for r in self._send(c)]
        else:
            with cf.ThreadPoolExecutor(max_workers=min(self.cfg.concurrency, len(chunks))) as pool:
                rows = [r for res in pool.map(self._send, chunks) for r in res]
        return torch.tensor(rows, dtype=torch.float32)


def load_config(name: str, is_url: bool) -> HttpConfig:
    """The config of ``http:CONFIG.toml`` or ``http:URL``."""
    return url_config(name) if is_url else read_config(name)


def load_http(name: str, is_url: bool, spec: str) -> Encoder:
    """An HTTP embedding service as a black-box :class:`Encoder` (no request is sent here)."""
    try:
        import httpx  # noqa: F401
        import tenacity  # noqa: F401
    except ImportError as e:
        raise EncoderUnavailableError("the http backend needs httpx and tenacity: pip install 'auditmi[http]'") from e
    cfg = load_config(name, is_url)
    emb = HttpEmbedder(cfg)
    where = emb.where

    def preflight(n_images: int, n_views: int, views_per_call: int) -> None:
        p = plan(cfg, n_images, n_views, views_per_call)
        spent = emb.requests_sent
        if (cfg.budget_requests and spent + p.requests > cfg.budget_requests) or (cfg.budget_views and emb.views_sent + p.views > cfg.budget_views):
            raise over_budget_error(p, where)

    return Encoder(
        spec=f"http:{redact_url(name)}" if is_url else emb.redact(spec),
        backend="http",
        forward=emb,
        input_size=cfg.input_size,
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
        device=torch.device("cpu"),
        identity=identity(cfg),
        source=f"HTTP {cfg.protocol} API {redact_url(cfg.url)}" + (f" model {cfg.model}" if cfg.model else ""),
        module=None,
        info={"protocol": cfg.protocol, "model": cfg.model or None, "version": cfg.version or None, "max_batch": cfg.max_batch,
              "note": "views sent as 8-bit lossless PNG; a remote model can change without notice: set version in the config"},
        remote=True,
        batch_size=cfg.views_per_call,
        preflight=preflight,
    )
