"""Test helpers for the encoder backends: a local embedding service with injectable faults."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import torch

from auditmi.encoders.base import Encoder


class EmbedService:
    """An image-embedding HTTP API on 127.0.0.1 that serves an auditmi :class:`Encoder`.

    Speaks the OpenAI-compatible, Cohere and Jina wire formats (chosen by the body's shape).
    ``faults`` is consumed one entry per request: ``"429"`` (with ``Retry-After: 1``), ``"503"``,
    ``"timeout"`` (no answer for ``sleep`` seconds, then the connection closes) or ``"ok"``; when empty, every request is
    answered. ``fail_after`` makes every request after that many answered ones a 503.
    Every request is logged as (time, status, n_images, headers).
    """

    def __init__(self, encoder: Encoder, token: str | None = None, sleep: float = 1.5) -> None:
        self.encoder, self.token, self.sleep = encoder, token, sleep
        self.faults: list[str] = []
        self.fail_after: int | None = None
        self.log: list[tuple[float, int, int, dict[str, str]]] = []
        self.answered = 0
        self._lock = threading.Lock()
        svc = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep pytest output clean
                pass

            def _reply(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
                body = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client gave up
                    self.wfile.write(body)

            def do_POST(self) -> None:  # noqa: N802 (http.server API)
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                hdrs = {k.lower(): v for k, v in self.headers.items()}
                with svc._lock:
                    fault = svc.faults.pop(0) if svc.faults else "ok"
                    if svc.fail_after is not None and svc.answered >= svc.fail_after:
                        fault = "503"
                if svc.token is not None and hdrs.get("authorization") != f"Bearer {svc.token}":
                    svc.log.append((time.monotonic(), 401, 0, hdrs))
                    return self._reply(401, {"error": {"message": "invalid api key"}})
                if fault == "429":
                    svc.log.append((time.monotonic(), 429, 0, hdrs))
                    return self._reply(429, {"error": "slow down"}, {"Retry-After": "1"})
                if fault == "503":
                    svc.log.append((time.monotonic(), 503, 0, hdrs))
                    return self._reply(503, {"error": "unavailable"})
                if fault == "timeout":
                    svc.log.append((time.monotonic(), 0, 0, hdrs))
                    time.sleep(svc.sleep)  # the client has given up by now: drop the request unanswered
                    return
                body = json.loads(raw)
                if "images" in body:
                    kind, items = "cohere", [u.split(",", 1)[1] for u in body["images"]]
                elif body["input"] and isinstance(body["input"][0], dict):
                    kind, items = "jina", [d["image"] for d in body["input"]]
                else:
                    kind, items = "openai", [u.split(",", 1)[1] for u in body["input"]]
                emb = svc.embed_png(items).tolist()
                with svc._lock:
                    svc.answered += 1
                svc.log.append((time.monotonic(), 200, len(items), hdrs))
                if kind == "cohere":
                    return self._reply(200, {"embeddings": {"float": emb}})
                data = [{"object": "embedding", "index": i, "embedding": e} for i, e in enumerate(emb)]
                self._reply(200, {"object": "list", "data": data[::-1], "model": body.get("model")})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/embeddings"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def embed_png(self, items: list[str]) -> torch.Tensor:
        """Embeddings of base64 PNG views, normalised the way the served encoder expects."""
        from PIL import Image

        arrs = [np.asarray(Image.open(io.BytesIO(base64.b64decode(b))).convert("RGB")) for b in items]
        x = torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2).float() / 255.0
        m = torch.tensor(self.encoder.mean).view(1, 3, 1, 1)
        s = torch.tensor(self.encoder.std).view(1, 3, 1, 1)
        with self._lock:  # one forward at a time: the served module is shared by the handler threads
            return self.encoder.embed((x - m) / s)

    def statuses(self) -> list[int]:
        return [s for _, s, _, _ in self.log]

    def __enter__(self) -> EmbedService:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()


def write_config(path: Any, url: str, **kw: Any) -> Any:
    """An HTTP encoder config file (TOML) with ``url`` and the given keys."""
    lines = [f'url = "{url}"']
    headers = kw.pop("headers", {})
    for k, v in kw.items():
        lines.append(f"{k} = {json.dumps(v)}")
    if headers:
        lines.append("[headers]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in headers.items()]
    path.write_text("\n".join(lines) + "\n")
    return path
