"""Job webhooks (Standard Webhooks, checked with the reference `standardwebhooks` verifier) and `audio_url` downloads,
against real local HTTP servers (127.0.0.1 is allowed through OUTBOUND_ALLOWLIST in these servers)."""
from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import standardwebhooks

from tests.jobs.conftest import OLD_SECRET, WEBHOOK_SECRET
from tests.jobs.helpers import submit, wait_for, wait_for_activity
from tests.jobs.receiver import webhook_receiver
from tests.service_servers import JFK_REFERENCE
from tests.support import ARTIFACTS, fixture_path, free_port


def _deliveries_settled(job: dict) -> bool:
    deliveries = job["webhook"]["deliveries"]
    return bool(deliveries) and all(delivery["status"] != "pending" for delivery in deliveries)


def test_a_delivery_between_retries_keeps_the_service_busy(http: httpx.Client) -> None:
    """/health/activity counts webhook deliveries still to be made, so the proxy does not stop the service between
    retries (backoff here 0.2 s doubling: the five failures span about 6 s)."""
    with webhook_receiver({"/down": [500] * 5}) as receiver:
        job_id = submit(http, fixture_path("jfk.flac"), webhook_url=receiver.url("/down")).json()["id"]
        receiver.wait_for(2, "/down")
        busy = wait_for_activity(http, lambda body: body["counts"].get("webhooks_pending") == 1)
        assert busy["busy"] is True
        assert http.get(f"/v1/jobs/{job_id}").json()["status"] == "succeeded"
        receiver.wait_for(6, "/down")
        wait_for(http, job_id, until=_deliveries_settled)
        idle = wait_for_activity(http, lambda body: body["counts"].get("webhooks_pending") == 0)
    assert idle["busy"] is False


def test_500_twice_then_200_is_three_attempts_of_one_signed_delivery(http: httpx.Client) -> None:
    with webhook_receiver({"/flaky": [500, 500, 200]}) as receiver:
        job_id = submit(http, fixture_path("jfk.flac"), webhook_url=receiver.url("/flaky"), metadata={"k": "v"}).json()["id"]
        requests = receiver.wait_for(3, "/flaky")
        job = wait_for(http, job_id, until=_deliveries_settled)

    assert job["status"] == "succeeded"
    [delivery] = job["webhook"]["deliveries"]
    assert delivery["status"] == "delivered" and delivery["event"] == "job.succeeded"
    assert [attempt["outcome"] for attempt in delivery["attempts"]] == ["retrying", "retrying", "delivered"]
    assert [attempt["status_code"] for attempt in delivery["attempts"]] == [500, 500, 200]
    assert {request.headers["webhook-id"] for request in requests} == {delivery["id"]}
    bodies = {request.body for request in requests}
    assert len(bodies) == 1  # the same message each time

    for request in requests:
        for secret in (WEBHOOK_SECRET, OLD_SECRET):  # both secrets sign (rotation)
            payload = standardwebhooks.Webhook(secret).verify(request.body, request.headers)
            assert payload["type"] == "job.succeeded"
            assert payload["data"]["id"] == job_id and payload["data"]["metadata"] == {"k": "v"}
        assert len(request.headers["webhook-signature"].split(" ")) == 2
    assert "country" not in requests[0].body.decode()  # the job, never the transcript
    tampered = requests[0].body.replace(b"succeeded", b"failed!!!")
    try:
        standardwebhooks.Webhook(WEBHOOK_SECRET).verify(tampered, requests[0].headers)
    except standardwebhooks.WebhookVerificationError:
        pass
    else:
        raise AssertionError("a tampered body verified")
    metrics = http.get("/metrics").text
    assert 'whisper_faster_webhook_deliveries_total{outcome="retrying"}' in metrics
    assert 'whisper_faster_webhook_deliveries_total{outcome="delivered"}' in metrics


def test_400_is_not_retried_and_410_disables_the_url(http: httpx.Client) -> None:
    with webhook_receiver({"/bad": [400], "/gone": [410]}) as receiver:
        bad = submit(http, fixture_path("jfk.flac"), webhook_url=receiver.url("/bad")).json()["id"]
        gone = submit(http, fixture_path("jfk.flac"), webhook_url=receiver.url("/gone")).json()["id"]
        bad_job = wait_for(http, bad, until=_deliveries_settled)
        gone_job = wait_for(http, gone, until=_deliveries_settled)
        after_gone = submit(http, fixture_path("jfk.flac"), webhook_url=receiver.url("/gone")).json()["id"]
        after_job = wait_for(http, after_gone, until=_deliveries_settled)
        time.sleep(1.0)  # several backoff periods (JOB_RETRY_SECONDS=0.2): nothing more may arrive
        assert len(receiver.received("/bad")) == 1
        assert len(receiver.received("/gone")) == 1

    [bad_delivery] = bad_job["webhook"]["deliveries"]
    assert bad_delivery["status"] == "failed"
    assert [(a["outcome"], a["status_code"]) for a in bad_delivery["attempts"]] == [("failed", 400)]
    assert gone_job["webhook"]["deliveries"][0]["status"] == "disabled"
    [disabled] = after_job["webhook"]["deliveries"]
    assert disabled["status"] == "disabled" and disabled["attempts"][0]["status_code"] is None


def test_failed_and_canceled_jobs_are_announced_too(http: httpx.Client) -> None:
    with webhook_receiver() as receiver:
        job_id = http.post(
            "/v1/jobs", files={"file": ("x.wav", b"RIFF not really")}, data={"webhook_url": receiver.url()}
        ).json()["id"]
        [request] = receiver.wait_for(1)
    payload = standardwebhooks.Webhook(WEBHOOK_SECRET).verify(request.body, request.headers)
    assert payload["type"] == "job.failed" and payload["data"]["id"] == job_id
    assert payload["data"]["error"]["code"] == "invalid_audio"


@contextmanager
def audio_host() -> Iterator[str]:
    """Serves jfk.flac at /jfk.flac (whatever its query), a redirect to it at /moved, a redirect to a private address
    at /sneaky and to a host IDNA cannot encode at /to-bad-idna, 503 twice then the file at /flaky, and 503 for ever
    at /down."""
    audio = fixture_path("jfk.flac").read_bytes()
    port = free_port()
    flaky = [503, 503]

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            if self.path == "/down" or (self.path == "/flaky" and flaky):
                if self.path == "/flaky":
                    flaky.pop()
                self.send_response(503)
                self.send_header("content-length", "0")
                self.end_headers()
                return
            if self.path.split("?")[0] in ("/jfk.flac", "/flaky"):
                self.send_response(200)
                self.send_header("content-length", str(len(audio)))
                self.end_headers()
                self.wfile.write(audio)
                return
            target = {"/moved": "/jfk.flac", "/sneaky": "http://10.20.30.40/jfk.flac",
                      "/to-bad-idna": "http://xn--a.com/jfk.flac"}.get(self.path)
            self.send_response(302 if target else 404)
            if target:
                self.send_header("location", target)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.shutdown()
        server.server_close()


def test_audio_url_follows_checked_redirects(http: httpx.Client) -> None:
    with audio_host() as base:
        ok = http.post("/v1/jobs", json={"audio_url": f"{base}/moved", "metadata": {"src": "url"}})
        assert ok.status_code == 202, ok.text
        sneaky = http.post("/v1/jobs", json={"audio_url": f"{base}/sneaky"}).json()["id"]
        missing = http.post("/v1/jobs", json={"audio_url": f"{base}/nothing-here"}).json()["id"]
        done = wait_for(http, ok.json()["id"])
        refused = wait_for(http, sneaky)
        not_found = wait_for(http, missing)
    assert done["status"] == "succeeded", done
    text = http.get(f"/v1/jobs/{done['id']}/result").json()["text"]
    assert text.lower().split()[-4:] == JFK_REFERENCE.lower().split()[-4:]
    assert refused["status"] == "failed" and refused["error"]["code"] == "audio_url_refused"
    assert "10.20.30.40" in refused["error"]["message"]
    assert not_found["status"] == "failed" and not_found["attempts"] == 1 and "404" in not_found["error"]["message"]
    assert json.loads(json.dumps(done["metadata"])) == {"src": "url"}


def test_a_transient_download_failure_is_retried_with_backoff_and_a_lasting_one_fails(http: httpx.Client) -> None:
    with audio_host() as base:
        flaky = http.post("/v1/jobs", json={"audio_url": f"{base}/flaky"}).json()["id"]
        down = http.post("/v1/jobs", json={"audio_url": f"{base}/down"}).json()["id"]
        recovered = wait_for(http, flaky)
        failed = wait_for(http, down)
    assert recovered["status"] == "succeeded" and recovered["attempts"] == 3, recovered
    assert failed["status"] == "failed" and failed["attempts"] == 3  # JOB_MAX_ATTEMPTS
    assert "503" in failed["error"]["message"] and "after 3 attempts" in failed["error"]["message"]
    assert 'whisper_faster_job_attempts_total{outcome="retried"}' in http.get("/metrics").text


def test_a_receiver_trickling_its_answer_is_cut_off_at_the_deadline_and_retried(http: httpx.Client) -> None:
    """The first POST is answered one byte every 0.3 s for up to a minute (each byte resets httpx's per-read
    timeout); the attempt must end at WEBHOOK_TIMEOUT_SECONDS (10 s here) as a retried timeout, and the retry lands."""
    port = free_port()
    posts: list[float] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers.get("content-length") or 0))
            posts.append(time.monotonic())
            if len(posts) > 1:
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()
                return
            self.wfile.write(b"HTTP/1.1 200 OK\r\nx-slow: ")
            self.wfile.flush()
            try:
                for _ in range(200):
                    time.sleep(0.3)
                    self.wfile.write(b"a")
                    self.wfile.flush()
                self.wfile.write(b"\r\ncontent-length: 0\r\n\r\n")
            except OSError:
                pass  # the service hung up: what the deadline should do
            self.close_connection = True

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        job_id = submit(http, fixture_path("jfk.flac"), webhook_url=f"http://127.0.0.1:{port}/slow").json()["id"]
        job = wait_for(http, job_id, until=_deliveries_settled)
    finally:
        server.shutdown()
        server.server_close()
    [delivery] = job["webhook"]["deliveries"]
    assert [attempt["outcome"] for attempt in delivery["attempts"]] == ["retrying", "delivered"], delivery
    assert "WEBHOOK_TIMEOUT_SECONDS" in delivery["attempts"][0]["error"]
    assert delivery["status"] == "delivered"


@contextmanager
def slow_receiver(seconds: float) -> Iterator[tuple[str, list[float]]]:
    """A receiver that answers each POST after `seconds`; yields its URL and when each answer left."""
    port = free_port()
    answered: list[float] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers.get("content-length") or 0))
            time.sleep(seconds)
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()
            answered.append(time.time())

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{port}/hook", answered
    finally:
        server.shutdown()
        server.server_close()


def test_a_slow_receiver_does_not_hold_up_another_receivers_delivery(http: httpx.Client) -> None:
    """One outbox per process used to send one delivery at a time: a receiver answering in 8 s held every other
    job's webhook for those 8 s. Now deliveries to another receiver go out meanwhile."""
    with slow_receiver(8) as (slow_url, answered), webhook_receiver() as fast:
        slow_job = submit(http, fixture_path("hotwords.mp3"), webhook_url=slow_url).json()["id"]
        wait_for(http, slow_job, until=lambda job: bool(job["webhook"]["deliveries"]))
        fast_job = submit(http, fixture_path("hotwords.mp3"), webhook_url=fast.url()).json()["id"]
        [delivered] = fast.wait_for(1, timeout=30)
        assert not answered, "the fast receiver's delivery waited for the slow one"
        wait_for(http, slow_job, until=_deliveries_settled, timeout=60)
    assert delivered.at < answered[0]
    assert wait_for(http, fast_job, until=_deliveries_settled)["webhook"]["deliveries"][0]["status"] == "delivered"


def test_a_url_a_410_disabled_is_reenabled_by_its_owner(http: httpx.Client) -> None:
    with webhook_receiver({"/gone-then-back?token=never-shown": [410]}) as receiver:
        url = receiver.url("/gone-then-back") + "?token=never-shown"
        first = submit(http, fixture_path("hotwords.mp3"), webhook_url=url).json()["id"]
        assert wait_for(http, first, until=_deliveries_settled)["webhook"]["deliveries"][0]["status"] == "disabled"
        listed = http.get("/v1/webhooks/disabled").json()["data"]
        [entry] = [item for item in listed if item["url"] == receiver.url("/gone-then-back")]  # no query string
        assert entry["id"].startswith("whd_") and entry["owner"] == "anonymous"
        assert http.delete(f"/v1/webhooks/disabled/{entry['id']}").json()["deleted"] is True
        assert http.delete(f"/v1/webhooks/disabled/{entry['id']}").status_code == 404
        again = submit(http, fixture_path("hotwords.mp3"), webhook_url=url).json()["id"]
        job = wait_for(http, again, until=_deliveries_settled)
        assert job["webhook"]["deliveries"][0]["status"] == "delivered"
        assert len(receiver.received("/gone-then-back?token=never-shown")) == 2


def test_url_credentials_and_query_never_reach_the_job_or_the_log(http: httpx.Client) -> None:
    log = ARTIFACTS / "jobs-whisper_faster.log"
    before = log.stat().st_size
    with webhook_receiver() as receiver, audio_host() as base:
        secret_hook = receiver.url("/hook").replace("http://", "http://hookuser:hookpass-9f1@") + "?sig=hooksig-77a"
        job = http.post("/v1/jobs", json={
            "audio_url": base.replace("http://", "http://dluser:dlpass-3c2@") + "/jfk.flac?X-Amz-Signature=dlsig-41e",
            "webhook_url": secret_hook,
        })
        assert job.status_code == 202, job.text
        assert job.json()["webhook"]["url"] == receiver.url("/hook")
        done = wait_for(http, job.json()["id"], until=_deliveries_settled)
        assert done["status"] == "succeeded" and done["webhook"]["url"] == receiver.url("/hook")
        [request] = receiver.received()
        assert request.path == "/hook?sig=hooksig-77a"  # the receiver gets the whole URL; nobody else sees it
    with open(log, "rb") as handle:
        handle.seek(before)
        written = handle.read().decode(errors="replace")
    assert "HTTP Request" in written  # httpx's request lines are there, redacted
    for secret in ("hookpass-9f1", "hooksig-77a", "dlpass-3c2", "dlsig-41e", "hookuser", "dluser"):
        assert secret not in written, secret


def test_a_host_idna_cannot_encode_is_a_400_and_a_permanent_failure_behind_a_redirect(http: httpx.Client) -> None:
    for url in ("http://a..b/x.wav", f"http://{'a' * 64}.com/x.wav", "http://xn--a.com/x.wav"):
        for field in ("audio_url", "webhook_url"):
            body = {"audio_url": url} if field == "audio_url" else {"audio_url": "https://93.184.215.14/a", field: url}
            refused = http.post("/v1/jobs", json=body)
            assert refused.status_code == 400, (url, field, refused.text)
            assert refused.json()["error"]["code"] == "url_refused" and refused.json()["error"]["param"] == field
    with audio_host() as base:
        job = http.post("/v1/jobs", json={"audio_url": f"{base}/to-bad-idna"}).json()["id"]
        failed = wait_for(http, job)
    assert failed["status"] == "failed" and failed["attempts"] == 1, failed  # not retried as a transient error
    assert failed["error"]["code"] == "audio_url_refused"
