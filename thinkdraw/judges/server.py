"""Our own OpenAI-compatible judge server: any ChatBackend (a VLMChat on this machine) behind HTTP.

    server = JudgeServer(VLMChat.load("runs/judge"), port=0).start()   # a background thread; server.url
    judge = ChatJudge(HTTPChat(server.url))                              # answers as ChatJudge(VLMChat) does
    server.close()

`serve(...)` does the same in the foreground, for `thinkdraw serve-judge`. Endpoints:

    GET  /health               {"status": "ok", "model", "queued"}
    GET  /v1/models            the one model, named model_name
    POST /v1/chat/completions  the last user message (text, and at most one image as a base64 data: URL)

What it departs from OpenAI's API in: answers are always greedy (temperature and top_p are accepted and
ignored; the judges need the most likely answer and its log-probs); the backend answers one user turn, so
earlier messages (a system prompt, previous turns) are ignored; `logprobs` covers only the first answer token
(the backend gives only the first token's top candidates), its `token` being the most likely of them;
`finish_reason` is always "stop" (the backend does not say whether max_tokens cut the answer); usage is
omitted; any model name is accepted; n > 1 and streaming are refused.

Many connections, one model: each request is parsed (and its image decoded) on its own thread, then queued;
one worker thread owns the backend (a torch model is not thread-safe). It takes the oldest request and up to
max_batch - 1 more with the same max_tokens, waiting at most batch_wait_s for them, and calls
backend.complete once. A full queue answers 503 with Retry-After: 1; a JudgeError from the backend answers 500
with its message; a request we cannot read answers 400 with a one-line message, in OpenAI's error shape.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
import sys
import threading
import time
import traceback
import uuid
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from PIL import Image

from thinkdraw.errors import ThinkdrawError
from thinkdraw.judges.base import JudgeError
from thinkdraw.judges.chat import ChatBackend, Completion, Turn

DEFAULT_MAX_TOKENS = 16
MAX_TOKENS_CAP = 256  # longer asks are cut to this: judge answers are a word, a number, a box or a sentence
MAX_TOP_LOGPROBS = 20  # OpenAI's limit
MAX_BODY_BYTES = 64 * 2**20


class BadRequest(ValueError):
    """A request we cannot answer: the HTTP status and one line saying why."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.message, self.status = message, status


@dataclass(frozen=True)
class ChatRequest:
    turn: Turn
    max_tokens: int = DEFAULT_MAX_TOKENS
    top_logprobs: int | None = None  # None: no logprobs asked for; 0..MAX_TOP_LOGPROBS: that many candidates


def parse_chat_request(body: bytes) -> ChatRequest:
    """A chat completion request's last user message (text, at most one image) and answer options."""
    try:
        request = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BadRequest(f"the body is not JSON ({error})") from None
    if not isinstance(request, dict):
        raise BadRequest("the body is not a JSON object")
    if request.get("stream"):
        raise BadRequest("streaming is not supported")
    if request.get("n") not in (None, 1):
        raise BadRequest("only n=1 is supported")
    messages = request.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages must be a non-empty list")
    users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    if not users:
        raise BadRequest("there is no user message")
    turn = _parse_content(users[-1].get("content"))

    max_tokens = request.get("max_completion_tokens", request.get("max_tokens"))
    if max_tokens is None:
        max_tokens = DEFAULT_MAX_TOKENS
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise BadRequest(f"max_tokens must be a positive integer, not {max_tokens!r}")
    top_logprobs = None
    if request.get("logprobs"):
        top_logprobs = request.get("top_logprobs") or 0
        if not isinstance(top_logprobs, int) or isinstance(top_logprobs, bool):
            raise BadRequest(f"top_logprobs must be an integer, not {top_logprobs!r}")
        if not 0 <= top_logprobs <= MAX_TOP_LOGPROBS:
            raise BadRequest(f"top_logprobs must be between 0 and {MAX_TOP_LOGPROBS}, not {top_logprobs}")
    return ChatRequest(turn, min(max_tokens, MAX_TOKENS_CAP), top_logprobs)


def _parse_content(content) -> Turn:
    if isinstance(content, str):
        return Turn(content)
    if not isinstance(content, list):
        raise BadRequest("the user message's content must be a string or a list of parts")
    texts, images = [], []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            if not isinstance(part.get("text"), str):
                raise BadRequest("a text part has no text")
            texts.append(part["text"])
        elif kind == "image_url":
            url = part.get("image_url")
            url = url.get("url") if isinstance(url, dict) else url
            if not isinstance(url, str):
                raise BadRequest("an image_url part has no url")
            images.append(decode_data_url(url))
        else:
            raise BadRequest(f"unsupported content part {str(kind or part)[:40]!r}: use text and image_url parts")
    if len(images) > 1:
        raise BadRequest(f"at most one image per request, not {len(images)}")
    return Turn("\n".join(texts), images[0] if images else None)


def decode_data_url(url: str) -> Image.Image:
    """The image in a base64 data: URL."""
    if not url.startswith("data:"):
        raise BadRequest(f"only data: URLs are accepted for images, not {url[:40]!r}")
    header, comma, data = url.partition(",")
    if not comma or not header.endswith(";base64"):
        raise BadRequest("the image's data: URL is not base64 (data:image/png;base64,...)")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest("the image's data: URL has bad base64") from None
    try:
        image = Image.open(io.BytesIO(raw))
        image.load()
    except Exception as error:  # PIL raises many kinds for bytes that are not an image
        raise BadRequest(f"the image's data is not an image ({type(error).__name__})") from None
    return image


def chat_completion(answer: Completion, request: ChatRequest, model_name: str) -> dict:
    """An OpenAI chat.completion for one answer; logprobs (when asked) for its first token only."""
    choice: dict = {
        "index": 0,
        "message": {"role": "assistant", "content": answer.text},
        "logprobs": None,
        "finish_reason": "stop",
    }
    if request.top_logprobs is not None:
        # JSON has no -inf: a candidate with no probability is left out, as if not among the top ones
        ranked = sorted(
            ((token, lp) for token, lp in answer.first_logprobs.items() if math.isfinite(lp)),
            key=lambda item: -item[1],
        )
        content = []
        if ranked:
            token, logprob = ranked[0]  # greedy: the first token is the most likely candidate
            top = [_token(t, lp) for t, lp in ranked[: request.top_logprobs]]
            content.append({**_token(token, logprob), "top_logprobs": top})
        choice["logprobs"] = {"content": content}
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model_name,
        "choices": [choice],
    }


def _token(token: str, logprob: float) -> dict:
    return {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8"))}


@dataclass(eq=False)
class _Pending:
    """A queued request; the worker sets `answer` or `error` (status, message), then `done`."""

    turn: Turn
    max_tokens: int
    done: threading.Event = field(default_factory=threading.Event)
    answer: Completion | None = None
    error: tuple[int, str] | None = None

    def fail(self, status: int, message: str) -> None:
        self.error = (status, message)
        self.done.set()


class Batcher:
    """The one thread that calls the backend, on batches of queued turns with the same max_tokens."""

    def __init__(self, backend: ChatBackend, max_batch: int = 16, max_queue: int = 256, batch_wait_s: float = 0.005):
        self.backend, self.max_batch, self.max_queue, self.batch_wait_s = backend, max_batch, max_queue, batch_wait_s
        self._queue: deque[_Pending] = deque()
        self._ready = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="judge-backend", daemon=True)
        self._thread.start()

    @property
    def queued(self) -> int:
        return len(self._queue)

    def submit(self, turn: Turn, max_tokens: int) -> _Pending:
        """The queued request; already failed with 503 when the queue is full or the server closing."""
        pending = _Pending(turn, max_tokens)
        with self._ready:
            if self._closed:
                pending.fail(503, "the judge server is closing")
            elif len(self._queue) >= self.max_queue:
                pending.fail(503, f"the judge server's queue is full ({self.max_queue} waiting): try again later")
            else:
                self._queue.append(pending)
                self._ready.notify()
        return pending

    def close(self, wait_s: float = 1.0) -> None:
        """Fails what is still queued; waits a little for a batch in flight (a slow model is not waited for)."""
        with self._ready:
            self._closed = True
            left, self._queue = list(self._queue), deque()
            self._ready.notify_all()
        for pending in left:
            pending.fail(503, "the judge server is closing")
        if self._thread is not threading.current_thread():
            self._thread.join(wait_s)

    def _next_batch(self) -> list[_Pending]:
        """The oldest request and up to max_batch - 1 younger ones with its max_tokens; [] once closed."""
        with self._ready:
            while not self._queue and not self._closed:
                self._ready.wait()
            if self._closed:
                return []
            max_tokens = self._queue[0].max_tokens
            deadline = time.monotonic() + self.batch_wait_s
            while not self._closed:
                alike = sum(1 for p in self._queue if p.max_tokens == max_tokens)
                left = deadline - time.monotonic()
                if alike >= self.max_batch or left <= 0:
                    break
                self._ready.wait(left)
            batch, rest = [], deque()
            for pending in self._queue:
                if pending.max_tokens == max_tokens and len(batch) < self.max_batch:
                    batch.append(pending)
                else:
                    rest.append(pending)
            self._queue = rest
            return batch

    def _run(self) -> None:
        while batch := self._next_batch():
            try:
                answers = self.backend.complete([p.turn for p in batch], batch[0].max_tokens)
                if len(answers) != len(batch):
                    raise JudgeError(f"the judge answered {len(answers)} of {len(batch)} questions")
            except ThinkdrawError as error:
                for pending in batch:
                    pending.fail(500, str(error))
                continue
            except Exception as error:  # a bug in the backend: shown here, and each request told in one line
                traceback.print_exc(file=sys.stderr)
                for pending in batch:
                    pending.fail(500, f"the judge failed: {type(error).__name__}: {error}")
                continue
            for pending, answer in zip(batch, answers, strict=True):
                pending.answer = answer
                pending.done.set()


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    protocol_version = "HTTP/1.1"  # keep-alive for clients that reuse connections (every answer has a length)
    timeout = 60  # an idle kept-alive connection is closed after this many seconds

    def do_GET(self) -> None:
        path = urlsplit(self.path).path.rstrip("/")
        judge = self.server.judge
        if path == "/health":
            self._send(200, {"status": "ok", "model": judge.model_name, "queued": judge.batcher.queued})
        elif path == "/v1/models":
            model = {"id": judge.model_name, "object": "model", "created": judge.created, "owned_by": "thinkdraw"}
            self._send(200, {"object": "list", "data": [model]})
        else:
            self._error(BadRequest(f"no such endpoint: GET {path or '/'}", 404))

    def do_POST(self) -> None:
        path = urlsplit(self.path).path.rstrip("/")
        try:
            body = self._body()  # read first, so a kept-alive connection is left at the next request
            if path != "/v1/chat/completions":
                raise BadRequest(f"no such endpoint: POST {path or '/'}", 404)
            request = parse_chat_request(body)
        except BadRequest as error:
            self._error(error)
            return
        status, answer = self.server.judge.answer(request)
        if status == 200:
            self._send(200, answer)
        else:
            self._error(BadRequest(answer, status))

    def _body(self) -> bytes:
        length = self.headers.get("Content-Length")
        try:
            if length is None:
                raise BadRequest("the request has no Content-Length", 411)
            try:
                length = int(length)
            except ValueError:
                raise BadRequest(f"bad Content-Length {length!r}") from None
            if not 0 <= length <= MAX_BODY_BYTES:
                raise BadRequest(f"the request body must be at most {MAX_BODY_BYTES} bytes", 413)
        except BadRequest:
            self.close_connection = True  # the body is left unread: this connection cannot serve another request
            raise
        return self.rfile.read(length)

    def _error(self, error: BadRequest) -> None:
        kind = {400: "invalid_request_error", 404: "not_found_error", 503: "overloaded_error"}
        payload = {"error": {"message": error.message, "type": kind.get(error.status, "server_error"), "code": None}}
        self._send(error.status, payload, {"Retry-After": "1"} if error.status == 503 else {})

    def _send(self, status: int, payload: dict, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(payload, allow_nan=False).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:
        if self.server.judge.log_requests:
            super().log_message(format, *args)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # the listen backlog: many clients connect at once
    judge: JudgeServer

    def handle_error(self, request, client_address) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, ConnectionError | TimeoutError):
            return  # a client that went away (it timed out, or was killed) before its answer
        super().handle_error(request, client_address)


class JudgeServer:
    """A ChatBackend behind an OpenAI-compatible HTTP server (see the module docstring).

    The socket is bound and the backend's worker started on construction (port=0 takes a free port: read
    .port or .url); then start() answers from a background thread, or serve_forever() from this one.
    """

    def __init__(
        self,
        backend: ChatBackend,
        host: str = "127.0.0.1",
        port: int = 8000,
        model_name: str = "thinkdraw-judge",
        max_batch: int = 16,
        max_queue: int = 256,
        batch_wait_s: float = 0.005,
        log_requests: bool = False,
    ):
        if max_batch < 1 or max_queue < 1 or batch_wait_s < 0:
            raise JudgeError(
                f"max_batch and max_queue must be at least 1 and batch_wait_s at least 0 "
                f"(got {max_batch}, {max_queue}, {batch_wait_s})"
            )
        self.model_name, self.log_requests, self.created = model_name, log_requests, int(time.time())
        try:
            self._http = _HTTPServer((host, port), _Handler)
        except OSError as error:
            raise JudgeError(f"cannot serve the judge on {host}:{port}: {error.strerror or error}") from None
        self._http.judge = self
        self.batcher = Batcher(backend, max_batch, max_queue, batch_wait_s)
        self._thread: threading.Thread | None = None
        self._serving = threading.Event()
        self._closed = False

    @property
    def host(self) -> str:
        return self._http.server_address[0]

    @property
    def port(self) -> int:
        return self._http.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def answer(self, request: ChatRequest) -> tuple[int, dict | str]:
        """(200, the chat completion) or (an error status, its message), once the worker has answered."""
        pending = self.batcher.submit(request.turn, request.max_tokens)
        pending.done.wait()
        if pending.error is not None:
            return pending.error
        assert pending.answer is not None
        return 200, chat_completion(pending.answer, request, self.model_name)

    def start(self) -> JudgeServer:
        """Answers from a background thread; returns at once."""
        self._thread = threading.Thread(target=self.serve_forever, name="judge-http", daemon=True)
        self._thread.start()
        self._serving.wait(5)
        return self

    def serve_forever(self) -> None:
        """Answers until close() (from another thread) or Ctrl-C."""
        self._serving.set()
        try:
            self._http.serve_forever(poll_interval=0.1)
        except KeyboardInterrupt:
            pass
        finally:
            self.close()

    def close(self) -> None:
        """Stops answering, closes the socket (a client now meets a refused connection), fails the queue."""
        if self._closed:
            return
        self._closed = True
        if self._serving.is_set() and threading.current_thread() is not self._thread:
            self._http.shutdown()  # waits for serve_forever to return; never call it before serve_forever ran
        self._http.server_close()
        self.batcher.close()

    def __enter__(self) -> JudgeServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def serve(backend: ChatBackend, **options) -> None:
    """Serves `backend` in the foreground until Ctrl-C (for `thinkdraw serve-judge`); `options` are
    JudgeServer's. For a server in a background thread, use JudgeServer(...).start()."""
    server = JudgeServer(backend, **options)
    print(f"judge {server.model_name!r} at {server.url}/v1 (Ctrl-C stops)", file=sys.stderr, flush=True)
    server.serve_forever()
