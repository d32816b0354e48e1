"""A chat backend over an OpenAI-compatible server: vLLM in real use, or `thinkdraw serve-judge` (server.py).

Each turn becomes one `POST {url}/v1/chat/completions` (greedy, temperature 0), asking for the first answer
token's top log-probs; a batch is sent side by side on a thread pool and answered in order. A request that
meets a refused or reset connection, a timeout, a 429 or a 5xx is tried again after an exponential backoff
(or the server's Retry-After, up to RETRY_AFTER_CAP_S); any other 4xx is not. Every failure is a JudgeError
naming the server and the reason in one line, e.g.

    judge server http://127.0.0.1:8000: connection refused (3 tries)
    judge server http://127.0.0.1:8000: answered 400: only data: URLs are accepted for images
    judge server http://127.0.0.1:8000: the answer is not a chat completion (not JSON: 'Hello')
"""

from __future__ import annotations

import base64
import email.utils
import http.client
import io
import json
import math
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from PIL import Image

from thinkdraw.judges.base import JudgeError
from thinkdraw.judges.chat import TOP_LOGPROBS, Completion, Turn

RETRY_AFTER_CAP_S = 10.0  # the longest a server's Retry-After makes us wait before the next try
_PNG_MODES = ("1", "L", "LA", "I", "I;16", "P", "RGB", "RGBA")  # the modes a PNG holds as they are


class _Retry(Exception):
    """A failed try that may succeed if tried again: the reason, and how long the server asks us to wait."""

    def __init__(self, reason: str, retry_after: float | None = None):
        super().__init__(reason)
        self.reason, self.retry_after = reason, retry_after


class _NotAnswer(Exception):
    """An answer that came back but is not what was asked for (not JSON, no choices): not worth a retry."""


def base_url(url: str) -> str:
    """The server's root, given with or without a trailing /v1 (and slash)."""
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise JudgeError(f"judge server {url!r}: not an http:// or https:// url")
    return url[: -len("/v1")] if url.endswith("/v1") else url


def image_data_url(image: Image.Image) -> str:
    """The image as a base64 PNG data URL (lossless, so the server sees our pixels)."""
    if image.mode not in _PNG_MODES:
        image = image.convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def chat_request(turn: Turn, model: str, max_tokens: int) -> dict:
    """The body of one chat completion request: the image (if any) before the text, greedy, top log-probs."""
    content: list[dict] = []
    if turn.image is not None:
        content.append({"type": "image_url", "image_url": {"url": image_data_url(turn.image)}})
    content.append({"type": "text", "text": turn.text})
    return {
        "model": model,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "logprobs": True,
        "top_logprobs": TOP_LOGPROBS,
    }


def read_completion(body: bytes) -> Completion:
    """choices[0]'s text and its first token's top log-probs; raises _NotAnswer saying what is wrong."""
    answer = _json(body)
    if not isinstance(answer, dict) or not isinstance(answer.get("choices"), list):
        raise _NotAnswer(_no_choices(answer))
    if not answer["choices"] or not isinstance(answer["choices"][0], dict):
        raise _NotAnswer("no choices")
    choice = answer["choices"][0]
    message = choice.get("message")
    if not isinstance(message, dict) or not isinstance(message.get("content", ""), str | None):
        raise _NotAnswer("choices[0] has no message with text content")
    text = message.get("content") or ""
    logprobs = choice.get("logprobs") or {}  # a server without log-probs: ChatJudge reads the text instead
    if not isinstance(logprobs, dict):
        raise _NotAnswer("choices[0].logprobs is not an object")
    tokens = logprobs.get("content") or []
    if not isinstance(tokens, list) or not all(isinstance(t, dict) for t in tokens):
        raise _NotAnswer("choices[0].logprobs.content is not a list of tokens")
    candidates = (tokens[0].get("top_logprobs") or []) if tokens else []
    if not isinstance(candidates, list):
        raise _NotAnswer("the first token's top_logprobs is not a list")
    first: dict[str, float] = {}
    for candidate in candidates:
        try:
            token, logprob = str(candidate["token"]), float(candidate["logprob"])
        except (TypeError, KeyError, ValueError):
            raise _NotAnswer(f"a top_logprobs entry is not {{token, logprob}}: {str(candidate)[:60]}") from None
        if math.isnan(logprob):
            continue
        # two token ids can decode to the same text; their probabilities add up
        first[token] = _logaddexp(first[token], logprob) if token in first else logprob
    return Completion(text, first)


def _json(body: bytes):
    if not body.strip():
        raise _NotAnswer("an empty body")
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise _NotAnswer(f"not JSON: {_snippet(body)}") from None


def _no_choices(answer) -> str:
    if isinstance(answer, dict) and isinstance(answer.get("error"), dict | str):
        return f"no choices, an error: {_server_message(json.dumps(answer).encode())}"
    if isinstance(answer, dict):
        return f"no choices; its keys are {', '.join(sorted(answer)[:6]) or 'none'}"
    return f"a JSON {type(answer).__name__}, not an object"


def _logaddexp(a: float, b: float) -> float:
    top = max(a, b)
    return top if top == -math.inf else top + math.log(math.exp(a - top) + math.exp(b - top))


def _snippet(body: bytes, limit: int = 80) -> str:
    return repr(" ".join(body.decode("utf-8", "replace").split())[:limit])


def _server_message(body: bytes) -> str:
    """The server's own words for an error: OpenAI's {"error": {"message"}}, FastAPI's {"detail"}, or text."""
    try:
        answer = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        answer = None
    message = None
    if isinstance(answer, dict):
        error = answer.get("error")
        message = error.get("message") if isinstance(error, dict) else error
        message = message or answer.get("detail") or answer.get("message")
    if message is None:
        message = body.decode("utf-8", "replace")
    message = " ".join(str(message).split())
    return (message[:200] + "...") if len(message) > 200 else (message or "no message")


def _retry_after(value: str | None) -> float | None:
    """Retry-After in seconds (a number or an HTTP date), capped; None when absent or unreadable."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = (email.utils.parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds()
        except (TypeError, ValueError):
            return None
    return min(max(seconds, 0.0), RETRY_AFTER_CAP_S)


class HTTPChat:
    """A ChatBackend over `POST {url}/v1/chat/completions`.

    url: the server, with or without a trailing /v1. model: the model name to ask for; None asks GET /v1/models
    once and takes the first. timeout: seconds to wait for each answer. retries: how many times each request is
    tried in all (1: never again). backoff: the wait after the first failed try, doubled after each next one.
    max_workers: requests in flight at once for one batch.
    """

    def __init__(
        self,
        url: str,
        model: str | None = None,
        timeout: float = 30,
        retries: int = 3,
        backoff: float = 0.5,
        max_workers: int = 8,
    ):
        self.url = base_url(url)
        if timeout <= 0 or retries < 1 or backoff < 0 or max_workers < 1:
            raise JudgeError(
                f"judge server {self.url}: timeout must be > 0, retries >= 1, backoff >= 0 and max_workers >= 1 "
                f"(got {timeout}, {retries}, {backoff}, {max_workers})"
            )
        self.timeout, self.retries, self.backoff, self.max_workers = timeout, retries, backoff, max_workers
        self._model = model
        self._model_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"HTTPChat({self.url!r}, model={self._model!r})"

    @property
    def model(self) -> str:
        """The model name sent with each request; the server's first listed model when none was given."""
        with self._model_lock:
            if self._model is None:
                self._model = self._first_model()
            return self._model

    def complete(self, turns: Sequence[Turn], max_tokens: int) -> list[Completion]:
        if not turns:
            return []
        model = self.model
        if len(turns) == 1:
            return [self._complete_one(turns[0], model, max_tokens)]
        pool = ThreadPoolExecutor(min(self.max_workers, len(turns)), thread_name_prefix="judge-http")
        try:
            futures = [pool.submit(self._complete_one, turn, model, max_tokens) for turn in turns]
            return [future.result() for future in futures]  # in order; the first failure is raised
        finally:
            # after a failure the rest are not sent, and those in flight end on their own (within their timeout)
            pool.shutdown(wait=False, cancel_futures=True)

    def _complete_one(self, turn: Turn, model: str, max_tokens: int) -> Completion:
        body = json.dumps(chat_request(turn, model, max_tokens)).encode()
        answer = self._send("/v1/chat/completions", body)
        try:
            return read_completion(answer)
        except _NotAnswer as why:
            raise self._error(f"the answer is not a chat completion ({why})") from None

    def _first_model(self) -> str:
        answer = self._send("/v1/models")
        try:
            models = _json(answer)
        except _NotAnswer as why:
            raise self._error(f"the model list (GET /v1/models) is {why}") from None
        data = models.get("data") if isinstance(models, dict) else None
        ids = [m.get("id") for m in data if isinstance(m, dict)] if isinstance(data, list) else []
        if not ids or not isinstance(ids[0], str) or not ids[0]:
            raise self._error("GET /v1/models lists no model: pass the model name")
        return ids[0]

    def _send(self, path: str, body: bytes | None = None) -> bytes:
        """The answer's body to one GET (no body) or POST, tried up to `retries` times."""
        reason, retry_after = "", None
        for attempt in range(self.retries):
            if attempt:
                wait = self.backoff * 2 ** (attempt - 1)
                time.sleep(max(wait, retry_after) if retry_after is not None else wait)
            try:
                return self._try(path, body)
            except _Retry as failure:
                reason, retry_after = failure.reason, failure.retry_after
        tries = "1 try" if self.retries == 1 else f"{self.retries} tries"
        raise self._error(f"{reason} ({tries})")

    def _try(self, path: str, body: bytes | None) -> bytes:
        """One request: its body on a 200; _Retry when a next try may do better; JudgeError when it cannot."""
        headers = {"Accept": "application/json", "User-Agent": "thinkdraw-judge"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(self.url + path, data=body, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.read()
        except urllib.error.HTTPError as answer:
            try:
                message = f"answered {answer.code}: {_server_message(self._read_error(answer))}"
            finally:
                answer.close()
            if answer.code in (408, 429) or answer.code >= 500:
                raise _Retry(message, _retry_after(answer.headers.get("Retry-After"))) from None
            raise self._error(message) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
            raise self._failure(error) from None

    def _read_error(self, answer: urllib.error.HTTPError) -> bytes:
        try:
            return answer.read()
        except (OSError, http.client.HTTPException):
            return b""

    def _failure(self, error: BaseException) -> Exception:
        """A transport failure as a _Retry (refused, reset, timed out) or a JudgeError (anything else)."""
        if isinstance(error, urllib.error.URLError) and isinstance(error.reason, BaseException):
            error = error.reason
        if isinstance(error, ConnectionRefusedError):
            return _Retry("connection refused")
        if isinstance(error, TimeoutError):
            return _Retry(f"no answer within {self.timeout:g} s")
        if isinstance(error, http.client.RemoteDisconnected):
            return _Retry("the connection closed without an answer")
        if isinstance(error, ConnectionError | http.client.IncompleteRead):
            return _Retry(f"connection reset ({type(error).__name__})")
        if isinstance(error, http.client.InvalidURL):
            return self._error(f"not a valid url ({error})")
        if isinstance(error, http.client.HTTPException):
            return self._error(f"the answer is not a chat completion (not HTTP: {type(error).__name__} {error})")
        reason = error.reason if isinstance(error, urllib.error.URLError) else error
        return self._error(f"cannot reach it: {' '.join(str(reason).split()) or type(reason).__name__}")

    def _error(self, reason: str) -> JudgeError:
        return JudgeError(f"judge server {self.url}: {reason}")
