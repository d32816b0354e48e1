"""Judges over HTTP, end to end on loopback: HTTPChat against our JudgeServer (and against stub servers that
misbehave), with a deterministic fake backend, so ChatJudge over HTTP must answer exactly as over the backend."""

from __future__ import annotations

import hashlib
import json
import re
import socketserver
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from thinkdraw.judges.base import JudgeError, Query
from thinkdraw.judges.chat import FEEDBACK_TOKENS, GROUND_TOKENS, SCORE_TOKENS, ChatJudge, Completion, Turn
from thinkdraw.judges.http import HTTPChat, image_data_url
from thinkdraw.judges.load import load_judge
from thinkdraw.judges.server import ChatRequest, JudgeServer, chat_completion

IMAGES = [
    Image.frombytes("RGB", (24, 16), bytes((7 * i) % 256 for i in range(24 * 16 * 3))),
    Image.frombytes("RGBA", (8, 8), bytes((3 * i + 1) % 256 for i in range(8 * 8 * 4))),
    Image.frombytes("L", (5, 9), bytes(range(45))),
]


def digest(image: Image.Image | None) -> str:
    if image is None:
        return ""
    return hashlib.sha256(f"{image.mode} {image.size}".encode() + image.tobytes()).hexdigest()


def fake_answer(turn: Turn, max_tokens: int) -> Completion:
    """Derived from the turn's text and pixels only, so any route to the backend gives the same answer."""
    n = len(turn.text) + int(digest(turn.image)[:6] or "0", 16)
    if max_tokens == 1:
        return Completion("yes" if n % 2 else "no", {"yes": -(n % 7) / 3, " No": -(n % 5) / 2 - 0.1, "maybe": -3.3})
    if max_tokens == SCORE_TOKENS:
        return Completion(f"{n % 11}")
    if max_tokens == GROUND_TOKENS:
        return Completion("none" if n % 3 == 0 else f"({n % 100},{n % 50}),({500 + n % 400},{600 + n % 300})")
    if max_tokens == FEEDBACK_TOKENS:
        return Completion("Nothing." if n % 4 == 0 else f"the {turn.text.split()[3]} is off by {n}.")
    return Completion(f"echo {max_tokens}: {turn.text}", {"echo": -0.25, "é": -1.5})


class Fake:
    """A chat backend answering fake_answer, after `delay` seconds per batch; records what it saw."""

    def __init__(self, delay: float = 0.0):
        self.delay, self.lock = delay, threading.Lock()
        self.batches: list[int] = []
        self.max_tokens: list[int] = []
        self.seen: list[tuple[str, str]] = []

    def complete(self, turns, max_tokens):
        time.sleep(self.delay)
        with self.lock:
            self.batches.append(len(turns))
            self.max_tokens.append(max_tokens)
            self.seen += [(turn.text, digest(turn.image)) for turn in turns]
        return [fake_answer(turn, max_tokens) for turn in turns]


QUERIES = [
    Query("a photo of a red circle", IMAGES[0]),
    Query("two blue squares above a cat", IMAGES[1], progress=0.5),
    Query("a green triangle", IMAGES[2], plan="a green triangle at (1,2),(300,400)"),
    Query("three yellow stars", None, plan="three stars"),
]


def test_http_judge_answers_exactly_as_the_backend_does():
    local_fake, served = Fake(), Fake()
    local = ChatJudge(local_fake)
    with JudgeServer(served, port=0).start() as server:
        remote = ChatJudge(HTTPChat(server.url + "/v1/"))  # with /v1 and a slash, as vLLM's docs write it
        for question in ("outcome", "process", "potential", "semantic"):
            assert remote.yes(QUERIES, question) == local.yes(QUERIES, question)
        assert remote.score(QUERIES, "outcome") == local.score(QUERIES, "outcome")
        phrases = ["red circle", "cat", "triangle", "star"]
        assert remote.ground(QUERIES, phrases) == local.ground(QUERIES, phrases)
        assert remote.feedback(QUERIES) == local.feedback(QUERIES)
        assert remote.backend.model == "thinkdraw-judge"  # asked of GET /v1/models
        turns = [Turn(f"say {word}", image) for word, image in zip("abc", IMAGES, strict=True)] + [Turn("plain")]
        assert HTTPChat(server.url).complete(turns, 16) == [fake_answer(t, 16) for t in turns]
    # the same texts and the same pixels reached the backend (in the order the requests arrived)
    assert sorted(served.seen) == sorted(local_fake.seen + [(t.text, digest(t.image)) for t in turns])
    assert {d for _, d in served.seen} == {digest(image) for image in IMAGES} | {""}


def test_yes_reads_logprobs_across_http():
    with JudgeServer(Fake(), port=0).start() as server:
        probabilities = ChatJudge(HTTPChat(server.url)).yes(QUERIES)
    assert probabilities == ChatJudge(Fake()).yes(QUERIES)
    assert all(0 < p < 1 for p in probabilities)  # from the log-probs, not from the answer's word


def test_a_closed_server_is_a_quick_connection_refused():
    server = JudgeServer(Fake(), port=0).start()
    url = server.url
    server.close()
    chat = HTTPChat(url, model="m", retries=3, backoff=0.01)
    start = time.monotonic()
    with pytest.raises(JudgeError, match=rf"^judge server {re.escape(url)}: connection refused \(3 tries\)$"):
        chat.complete([Turn("hello")], 1)
    assert time.monotonic() - start < 2
    with pytest.raises(JudgeError, match="connection refused"):
        ChatJudge(HTTPChat(url, backoff=0.01)).yes(QUERIES[:1])  # asking the model's name is refused alike


def test_a_slow_backend_is_a_timeout():
    with JudgeServer(Fake(delay=1.5), port=0).start() as server:
        chat = HTTPChat(server.url, model="m", timeout=0.3, retries=2, backoff=0.01)
        start = time.monotonic()
        with pytest.raises(JudgeError, match=r": no answer within 0.3 s \(2 tries\)$"):
            chat.complete([Turn("hello")], 16)
        assert time.monotonic() - start < 1.5


def test_a_backend_error_is_a_500_with_its_message():
    class Failing:
        def complete(self, turns, max_tokens):
            raise JudgeError("the judge's weights are not loaded")

    with JudgeServer(Failing(), port=0).start() as server:
        chat = HTTPChat(server.url, model="m", retries=2, backoff=0.01)
        with pytest.raises(JudgeError, match=r"answered 500: the judge's weights are not loaded \(2 tries\)$"):
            chat.complete([Turn("hello")], 1)


class Stub:
    """A server answering POSTs from a script of (status, body, headers), counting the hits."""

    def __init__(self, script: list[tuple[int, bytes, dict[str, str]]]):
        self.script, self.hits, self.requests = list(script), 0, []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                stub.requests.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                stub.hits += 1
                status, body, headers = stub.script.pop(0) if len(stub.script) > 1 else stub.script[0]
                self.send_response(status)
                for name, value in {"Content-Length": str(len(body)), **headers}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"
        threading.Thread(target=self.http.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.http.shutdown()
        self.http.server_close()


GOOD = json.dumps(chat_completion(Completion("yes", {"yes": -0.125, "no": -2.5}), ChatRequest(Turn(""), 1, 20), "m"))
ERROR = json.dumps({"error": {"message": "the model is busy", "type": "server_error"}}).encode()


@pytest.mark.parametrize(
    "body, why",
    [
        (b"Hello, I am not JSON", r"not JSON: 'Hello, I am not JSON'"),
        (b'{"object": "list", "data": []}', r"no choices; its keys are data, object"),
        (b"", r"an empty body"),
        (b'{"choices": []}', r"no choices"),
        (b'{"choices": [{"text": "yes"}]}', r"choices\[0\] has no message"),
        (b'{"error": {"message": "out of memory"}}', r"no choices, an error: out of memory"),
    ],
)
def test_garbage_answers_are_not_chat_completions(body, why):
    with Stub([(200, body, {})]) as stub:
        with pytest.raises(JudgeError, match=rf"^judge server {stub.url}: the answer is not a chat completion \({why}"):
            HTTPChat(stub.url, model="m", backoff=0.01).complete([Turn("hello")], 1)
        assert stub.hits == 1  # not worth a retry


def test_an_answer_that_is_not_http_is_not_a_chat_completion():
    class Garbage(socketserver.StreamRequestHandler):
        def handle(self):
            while self.rfile.readline() not in (b"\r\n", b""):
                pass
            self.wfile.write(b"garbage, not HTTP\r\n\r\n")

    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), Garbage) as raw:
        threading.Thread(target=raw.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        url = f"http://127.0.0.1:{raw.server_address[1]}"
        with pytest.raises(JudgeError, match=r"the answer is not a chat completion \(not HTTP: BadStatusLine"):
            HTTPChat(url, model="m", backoff=0.01).complete([Turn("hello")], 1)
        raw.shutdown()


def test_503_and_429_are_retried_and_400_is_not():
    script = [(503, ERROR, {"Retry-After": "0"}), (429, ERROR, {}), (200, GOOD.encode(), {})]
    with Stub(script) as stub:
        chat = HTTPChat(stub.url, model="judge-7b", retries=3, backoff=0.01)
        assert chat.complete([Turn("hello", IMAGES[0])], 1) == [Completion("yes", {"yes": -0.125, "no": -2.5})]
        assert stub.hits == 3
        request = stub.requests[0]
        assert request["model"] == "judge-7b" and request["max_tokens"] == 1 and request["temperature"] == 0
        assert request["logprobs"] is True and request["top_logprobs"] == 20
        image_part, text_part = request["messages"][0]["content"]
        assert image_part == {"type": "image_url", "image_url": {"url": image_data_url(IMAGES[0])}}
        assert text_part == {"type": "text", "text": "hello"}
    with Stub([(503, ERROR, {"Retry-After": "0.3"}), (200, GOOD.encode(), {})]) as stub:
        start = time.monotonic()
        HTTPChat(stub.url, model="m", backoff=0.01).complete([Turn("hello")], 1)
        assert time.monotonic() - start >= 0.3  # the server's Retry-After, not our 0.01 s
    with Stub([(500, ERROR, {})]) as stub:
        with pytest.raises(JudgeError, match=r"answered 500: the model is busy \(2 tries\)$"):
            HTTPChat(stub.url, model="m", retries=2, backoff=0.01).complete([Turn("hello")], 1)
        assert stub.hits == 2
    with Stub([(400, b'{"error": {"message": "max_tokens is too large"}}', {})]) as stub:
        with pytest.raises(JudgeError, match=rf"^judge server {stub.url}: answered 400: max_tokens is too large$"):
            HTTPChat(stub.url, model="m", retries=3, backoff=0.01).complete([Turn("hello")], 1)
        assert stub.hits == 1
    without_logprobs = json.dumps({"choices": [{"message": {"role": "assistant", "content": "Yes."}}]}).encode()
    with Stub([(200, without_logprobs, {})]) as stub:
        assert ChatJudge(HTTPChat(stub.url, model="m")).yes(QUERIES[:1]) == [1.0]  # the text fallback


def test_a_full_queue_is_a_503_the_client_reports_after_its_retries():
    gate, started = threading.Event(), threading.Event()

    class Blocking(Fake):
        def complete(self, turns, max_tokens):
            started.set()
            gate.wait(10)
            return super().complete(turns, max_tokens)

    backend, results = Blocking(), {}
    with JudgeServer(backend, port=0, max_batch=1, max_queue=1, batch_wait_s=0).start() as server:
        chat = HTTPChat(server.url, model="m", retries=1, timeout=10)

        def ask(text):
            results[text] = chat.complete([Turn(text)], 16)

        first = threading.Thread(target=ask, args=("first",))
        first.start()
        assert started.wait(5)  # the worker holds "first"
        second = threading.Thread(target=ask, args=("second",))
        second.start()
        deadline = time.monotonic() + 5
        while server.batcher.queued < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        over = HTTPChat(server.url, model="m", retries=2, backoff=0.01)
        start = time.monotonic()
        with pytest.raises(
            JudgeError, match=r"answered 503: the judge server's queue is full \(1 waiting\).*\(2 tries\)$"
        ):
            over.complete([Turn("third")], 16)
        assert time.monotonic() - start >= 0.9  # it waited the server's Retry-After: 1
        gate.set()
        first.join(5)
        second.join(5)
    assert results == {text: [fake_answer(Turn(text), 16)] for text in ("first", "second")}
    assert backend.batches == [1, 1]


def test_64_concurrent_clients_are_all_answered_in_order_and_batched():
    fake = Fake(delay=0.002)
    clients, rounds, per_round = 64, 4, 2
    with JudgeServer(fake, port=0, max_batch=16).start() as server:

        def client(c: int):
            chat = HTTPChat(server.url, timeout=20, backoff=0.05)
            max_tokens = 16 if c % 2 else 8  # a batch never mixes them
            for r in range(rounds):
                turns = [Turn(f"client {c} round {r} turn {k}", IMAGES[(c + k) % 3]) for k in range(per_round)]
                assert chat.complete(turns, max_tokens) == [fake_answer(t, max_tokens) for t in turns]
            return c

        start = time.monotonic()
        with ThreadPoolExecutor(clients) as pool:
            assert list(pool.map(client, range(clients))) == list(range(clients))
        elapsed = time.monotonic() - start
    assert sum(fake.batches) == clients * rounds * per_round  # none lost, none answered twice
    assert len(set(fake.seen)) == len(fake.seen)
    assert max(fake.batches) > 1 and max(fake.batches) <= 16
    assert elapsed < 20


def post(url: str, body: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read())


def chat_body(content, **options) -> bytes:
    return json.dumps({"model": "any", "messages": [{"role": "user", "content": content}], **options}).encode()


@pytest.mark.parametrize(
    "body, status, message",
    [
        (b"{not json", 400, "the body is not JSON"),
        (json.dumps({"messages": [{"role": "system", "content": "hi"}]}).encode(), 400, "there is no user message"),
        (chat_body([{"type": "image_url", "image_url": {"url": "http://example.com/a.png"}}]), 400, "only data: URLs"),
        (chat_body([{"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@"}}]), 400, "bad base64"),
        (
            chat_body([{"type": "image_url", "image_url": {"url": "data:image/png;base64,aGVsbG8="}}]),
            400,
            "not an image",
        ),
        (chat_body([{"type": "image_url", "image_url": {"url": image_data_url(IMAGES[0])}}] * 2), 400, "at most one"),
        (chat_body([{"type": "audio"}]), 400, "unsupported content part 'audio'"),
        (chat_body("hi", logprobs=True, top_logprobs=21), 400, "top_logprobs must be between 0 and 20"),
        (chat_body("hi", max_tokens=0), 400, "max_tokens must be a positive integer"),
        (chat_body("hi", stream=True), 400, "streaming is not supported"),
    ],
)
def test_malformed_requests_are_a_400_with_the_reason(body, status, message, capfd):
    fake = Fake()
    with JudgeServer(fake, port=0).start() as server:
        got_status, answer = post(server.url + "/v1/chat/completions", body)
    assert got_status == status
    assert message in answer["error"]["message"] and answer["error"]["type"] == "invalid_request_error"
    assert "\n" not in answer["error"]["message"]
    assert fake.batches == []  # never reached the backend
    assert capfd.readouterr().err == ""  # quiet: no per-request lines


def test_the_server_speaks_openai():
    fake = Fake()
    with JudgeServer(fake, port=0, model_name="world-judge").start() as server:
        with urllib.request.urlopen(server.url + "/health", timeout=10) as response:
            assert json.loads(response.read())["status"] == "ok"
        with urllib.request.urlopen(server.url + "/v1/models", timeout=10) as response:
            assert [m["id"] for m in json.loads(response.read())["data"]] == ["world-judge"]
        status, answer = post(server.url + "/v1/chat/completions", chat_body("hello there", temperature=0.7))
        assert status == 200 and answer["object"] == "chat.completion" and answer["model"] == "world-judge"
        choice = answer["choices"][0]
        assert choice["message"] == {"role": "assistant", "content": "echo 16: hello there"}  # max_tokens 16
        assert choice["logprobs"] is None and choice["finish_reason"] == "stop"
        status, answer = post(
            server.url + "/v1/chat/completions",
            chat_body([{"type": "text", "text": "hello"}], max_tokens=10**6, logprobs=True, top_logprobs=1),
        )
        first = answer["choices"][0]["logprobs"]["content"][0]
        assert (first["token"], first["logprob"]) == ("echo", -0.25)
        assert first["top_logprobs"] == [{"token": "echo", "logprob": -0.25, "bytes": list(b"echo")}]
        assert post(server.url + "/v1/nothing", b"{}")[0] == 404
    assert fake.max_tokens == [16, 256]  # the default, and the cap


def test_load_judge():
    judge = load_judge("http://127.0.0.1:8000/v1")
    assert isinstance(judge, ChatJudge) and judge.backend.url == "http://127.0.0.1:8000"
    with pytest.raises(JudgeError, match="not an http"):
        HTTPChat("localhost:8000")
    pytest.importorskip("thinkdraw.judges.vlm")
    with pytest.raises(JudgeError, match="no judge folder"):
        load_judge("./no/such/judge")
