"""Configuration, wire formats and query planning of the HTTP backend (no network here).

A config file (``http:api.toml``)::

    url = "https://api.example.com/v1/embeddings"
    model = "image-embedder-1"
    protocol = "openai"          # openai (default) | cohere | jina
    input_size = 224             # views are rendered at this size and sent as lossless PNG
    timeout = 60                 # seconds per request
    max_batch = 32               # images per request
    concurrency = 4              # requests in flight
    max_rps = 5                  # requests per second (0: no limit)
    budget_requests = 10000      # refuse scans that would need more requests (0: no budget)
    budget_views = 0             # refuse scans that would embed more views (0: no budget)
    retries = 6                  # retries on 429, 5xx, timeouts and connection errors
    version = "2026-01"          # the service's model version, if it tells you (part of the cache key)
    [headers]
    Authorization = "Bearer ${EMBED_API_KEY}"   # ${NAME}: read from the environment
    [extra_body]                 # merged into every request body
    modality = "image"

``http:URL`` uses the defaults with that URL. Header values (and the URL) may reference
environment variables as ``${NAME}``; their values are secrets: they never reach reports, logs,
the cache key or error messages.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from auditmi.errors import EncoderUnavailableError, InputError

PROTOCOLS = ("openai", "cohere", "jina")
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_KEYS = {"url", "model", "protocol", "input_size", "timeout", "headers", "max_batch", "concurrency", "max_rps",
         "budget_requests", "budget_views", "retries", "backoff", "backoff_max", "version", "extra_body"}


@dataclass(frozen=True)
class HttpConfig:
    """An HTTP embedding service; ``url`` and ``headers`` hold templates (``${NAME}`` unexpanded)."""

    url: str
    model: str = ""
    protocol: str = "openai"
    input_size: int = 224
    timeout: float = 60.0
    headers: dict[str, str] = field(default_factory=dict)
    max_batch: int = 32
    concurrency: int = 4
    max_rps: float = 0.0
    budget_requests: int = 0
    budget_views: int = 0
    retries: int = 6
    backoff: float = 1.0
    backoff_max: float = 60.0
    version: str = ""
    extra_body: dict[str, Any] = field(default_factory=dict)
    source: str = ""

    @property
    def views_per_call(self) -> int:
        """Views the pipeline hands the encoder at once: enough to keep every connection busy."""
        return self.max_batch * self.concurrency


def _check(cfg: HttpConfig, where: str) -> HttpConfig:
    """Refuse a config with values the client cannot use (messages name the file and the key)."""
    from auditmi.validate import int_in, nonnegative_float, positive_int

    if not cfg.url.startswith(("http://", "https://")) and not cfg.url.startswith("${"):
        raise InputError(f"{where}: url must start with http:// or https:// (got {redact_url(cfg.url)!r}).")
    if cfg.protocol not in PROTOCOLS:
        raise InputError(f"{where}: protocol must be one of {', '.join(PROTOCOLS)} (got {cfg.protocol!r}).")
    for name in ("input_size", "max_batch", "concurrency"):
        positive_int(f"{where}: {name}", getattr(cfg, name))
    for name in ("retries", "budget_requests", "budget_views"):
        int_in(f"{where}: {name}", getattr(cfg, name), 0, 10**15)
    nonnegative_float(f"{where}: timeout", cfg.timeout, strictly_positive=True)
    for name in ("max_rps", "backoff", "backoff_max"):
        nonnegative_float(f"{where}: {name}", getattr(cfg, name))
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in cfg.headers.items()):
        raise InputError(f"{where}: headers must map names to strings.")
    return cfg


def read_config(path: str | Path) -> HttpConfig:
    """Read and check an HTTP encoder config file (TOML)."""
    p = Path(path).expanduser()
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    try:
        data = tomllib.loads(p.read_text())
    except FileNotFoundError as e:
        raise EncoderUnavailableError(f"HTTP encoder config {p} does not exist (see `auditmi encoders --all`).") from e
    except (OSError, ValueError) as e:  # TOML errors cite the line, never a header value we expanded
        raise InputError(f"cannot read HTTP encoder config {p}: {e}") from e
    unknown = sorted(set(data) - _KEYS)
    if unknown:
        raise InputError(f"{p}: unknown key(s) {', '.join(unknown)}; known keys: {', '.join(sorted(_KEYS))}.")
    if "url" not in data:
        raise InputError(f"{p}: the key url is required.")
    kw = {k: v for k, v in data.items()}
    kw["headers"] = dict(kw.get("headers") or {})
    kw["extra_body"] = dict(kw.get("extra_body") or {})
    for k in ("model", "protocol", "version", "url"):
        if k in kw and not isinstance(kw[k], str):
            raise InputError(f"{p}: {k} must be a string.")
    return _check(HttpConfig(**kw, source=str(p.resolve())), str(p))


def url_config(url: str) -> HttpConfig:
    """The default configuration for ``http:URL``."""
    return _check(HttpConfig(url=url, source="url"), "http:URL")


def expand(template: str, what: str) -> tuple[str, list[str]]:
    """Replace ``${NAME}`` by environment values; returns (text, the values substituted)."""
    import os

    secrets: list[str] = []

    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in os.environ:
            raise EncoderUnavailableError(f"{what} references ${{{name}}}, but the environment variable {name} is not set.")
        secrets.append(os.environ[name])
        return os.environ[name]

    return _ENV.sub(sub, template), secrets


def redact_url(url: str) -> str:
    """A URL fit for reports and cache keys: no user info, query values hidden unless ``${NAME}``."""
    try:
        u = urlsplit(url)
    except ValueError:
        return "<invalid url>"
    host = u.hostname or ""
    netloc = host + (f":{u.port}" if u.port else "")
    query = urlencode([(k, v if _ENV.fullmatch(v) else "***") for k, v in parse_qsl(u.query, keep_blank_values=True)], safe="${}*")
    return urlunsplit((u.scheme, netloc, u.path, query, ""))


def identity(cfg: HttpConfig) -> str:
    """Cache key of an HTTP encoder: everything that shapes its answers, and no secret."""
    return "|".join(["http", redact_url(cfg.url), cfg.protocol, cfg.model, str(cfg.input_size), cfg.version,
                     repr(sorted(cfg.extra_body.items()))])


# ---- wire formats -------------------------------------------------------------------------

def request_body(cfg: HttpConfig, pngs_b64: list[str]) -> dict[str, Any]:
    """The JSON body of one request carrying ``pngs_b64`` (base64 PNG images)."""
    uris = [f"data:image/png;base64,{b}" for b in pngs_b64]
    if cfg.protocol == "openai":
        body: dict[str, Any] = {"model": cfg.model, "input": uris, "encoding_format": "float"}
    elif cfg.protocol == "cohere":
        body = {"model": cfg.model, "input_type": "image", "images": uris, "embedding_types": ["float"]}
    else:  # jina
        body = {"model": cfg.model, "input": [{"image": b} for b in pngs_b64], "normalized": True}
    return {**body, **cfg.extra_body}


def parse_embeddings(cfg: HttpConfig, payload: Any, n: int) -> list[list[float]]:
    """The ``n`` embeddings of a response, in request order; ValueError if the shape is wrong."""
    if not isinstance(payload, dict):
        raise ValueError("the response is not a JSON object")
    if cfg.protocol == "cohere":
        emb = payload.get("embeddings")
        rows = emb.get("float") if isinstance(emb, dict) else emb
        if not isinstance(rows, list):
            raise ValueError("no embeddings.float list in the response")
    else:
        data = payload.get("data")
        if not isinstance(data, list):
            raise ValueError("no data list in the response")
        if all(isinstance(d, dict) and isinstance(d.get("index"), int) for d in data):
            data = sorted(data, key=lambda d: d["index"])
        rows = [d.get("embedding") if isinstance(d, dict) else None for d in data]
    if len(rows) != n:
        raise ValueError(f"{len(rows)} embeddings for {n} images")
    dims = {len(r) if isinstance(r, list) else -1 for r in rows}
    if len(dims) != 1 or -1 in dims or 0 in dims:
        raise ValueError("embeddings are missing or of different lengths")
    return rows


# ---- planning -----------------------------------------------------------------------------

def request_count(n_images: int, n_views: int, views_per_call: int, max_batch: int) -> int:
    """Requests the pipeline makes for ``n_images`` new images of ``n_views`` views each.

    Mirrors :func:`auditmi.pipeline.compute_features`: it embeds ``views_per_call // n_views``
    images (at least one) per pass, in calls of at most ``views_per_call`` views, and the
    encoder sends each call as requests of at most ``max_batch`` views. Cached and duplicate
    images cost nothing, so this is an upper bound for a resumed scan.
    """
    if n_images <= 0:
        return 0
    per_pass = max(1, views_per_call // n_views)

    def calls(n_img: int) -> int:
        views, total = n_img * n_views, 0
        for start in range(0, views, views_per_call):
            total += math.ceil(min(views_per_call, views - start) / max_batch)
        return total

    full, rem = divmod(n_images, per_pass)
    return full * calls(per_pass) + (calls(rem) if rem else 0)


@dataclass(frozen=True)
class QueryPlan:
    """What a scan will send to the service, and whether it fits the budget."""

    n_images: int
    n_views: int
    views: int
    requests: int
    budget_requests: int
    budget_views: int

    @property
    def over_budget(self) -> bool:
        return bool((self.budget_requests and self.requests > self.budget_requests) or (self.budget_views and self.views > self.budget_views))

    def describe(self, per_image: str | None = None) -> str:
        """One line for the terminal (``per_image`` replaces "N views" when images are sent in several passes)."""
        b = [f"{self.budget_requests} requests" if self.budget_requests else "", f"{self.budget_views} views" if self.budget_views else ""]
        budget = " and ".join(x for x in b if x) or "none set"
        return (f"HTTP encoder: {self.n_images} images x {per_image or f'{self.n_views} views'} = {self.views} views in at most {self.requests} "
                f"requests (budget: {budget}; cached images are not sent again).")


def plan(cfg: HttpConfig, n_images: int, n_views: int, views_per_call: int | None = None) -> QueryPlan:
    """The query plan of embedding ``n_images`` images with ``n_views`` views each."""
    vpc = views_per_call or cfg.views_per_call
    return QueryPlan(n_images, n_views, n_images * n_views, request_count(n_images, n_views, vpc, cfg.max_batch),
                     cfg.budget_requests, cfg.budget_views)


def over_budget_error(p: QueryPlan, where: str, per_image: str | None = None) -> InputError:
    """The refusal of a plan over budget, saying what to do."""
    return InputError(
        f"{p.describe(per_image)} This is over the query budget set in {where}: scan fewer images, use fewer --views "
        "(and a calibration with as many), or raise budget_requests / budget_views."
    )
