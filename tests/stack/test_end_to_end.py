"""The whole platform, as `make run` composes it: Debian's nginx → the auto-start proxy → services the proxy's
`command` provider starts as real uvicorn processes on free ports, with their embedded default models.

One stack serves the module; the services are stopped until the first test that needs them wakes them.
"""

from __future__ import annotations

import base64
import re
import ssl
from collections.abc import Iterator

import httpx
import jiwer
import pytest
from openai import OpenAI

from scripts.stack.local_stack import LocalStack
from tests.stack.chromium import chromium_binary, headless_page
from tests.stack.harness import LoopbackTransport, running_local_stack
from tests.support import ARTIFACTS, fixture_path, require

pytestmark = pytest.mark.stack

JFK_REFERENCE = (
    "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."
)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    # No model hub here: whisperx's alignment model download fails at once instead of timing out.
    with running_local_stack(
        tmp_path_factory.mktemp("stack-e2e"), {"HF_HUB_OFFLINE": "1", "HF_TOKEN": ""},
        logs_name="stack-e2e-logs",  # nginx, proxy and service logs, kept for reading a failure after the run
        cors_origins=["https://portal.example.com"],
    ) as local:
        yield local


def proxy_state(stack: LocalStack, host: str) -> str:
    status = httpx.get(f"http://127.0.0.1:{stack.settings.proxy_port}/_autostart/status", timeout=5).json()
    return str(status["services"][host]["state"])


def client(stack: LocalStack, timeout: float = 600) -> httpx.Client:
    assert stack.credentials is not None
    return httpx.Client(
        transport=LoopbackTransport(verify=_tls(stack)),
        auth=(stack.credentials.user, stack.credentials.password),
        timeout=timeout,
    )


def test_services_are_stopped_until_their_first_request(stack: LocalStack) -> None:
    for host in stack.hostnames:
        assert proxy_state(stack, host) == "stopped"


def test_openai_client_wakes_whisper_faster_and_transcribes_jfk(stack: LocalStack) -> None:
    assert proxy_state(stack, stack.settings.whisper_host) == "stopped"
    openai = OpenAI(
        base_url=f"https://{stack.settings.whisper_host}:{stack.settings.https_port}/v1",
        api_key="unused",
        http_client=client(stack),
        max_retries=0,
    )
    with fixture_path("jfk.flac").open("rb") as audio:
        transcription = openai.audio.transcriptions.create(model="whisper-1", file=audio)
    assert _wer(JFK_REFERENCE, transcription.text) < 0.15, transcription.text
    assert proxy_state(stack, stack.settings.whisper_host) == "ready"


def test_openai_client_gets_verbose_json_with_segments(stack: LocalStack) -> None:
    openai = OpenAI(
        base_url=f"https://{stack.settings.whisper_host}:{stack.settings.https_port}/v1",
        api_key="unused",
        http_client=client(stack),
        max_retries=0,
    )
    with fixture_path("jfk.flac").open("rb") as audio:
        transcription = openai.audio.transcriptions.create(
            model="whisper-1", file=audio, response_format="verbose_json", timestamp_granularities=["segment"]
        )
    assert transcription.duration == pytest.approx(11.0, abs=0.5)
    assert "country" in " ".join(segment.text for segment in transcription.segments or [])


def test_whisperx_is_woken_and_diarizes_sample_into_two_speakers(stack: LocalStack) -> None:
    assert proxy_state(stack, stack.settings.whisperx_host) == "stopped"
    with client(stack) as http, fixture_path("sample.wav").open("rb") as audio:
        response = http.post(
            f"https://{stack.settings.whisperx_host}:{stack.settings.https_port}/transcribe",
            files={"file": ("sample.wav", audio, "audio/wav")},
            data={"diarize": "true"},
        )
    assert response.status_code == 200, response.text
    body = response.json()
    speakers = {segment["speaker"] for segment in body["segments"] if segment.get("speaker")}
    assert len(speakers) == 2, speakers
    assert len(" ".join(segment["text"] for segment in body["segments"]).split()) > 20
    assert proxy_state(stack, stack.settings.whisperx_host) == "ready"


@pytest.mark.parametrize("service", ["whisper-faster", "whisperx"])
def test_swagger_ui_opens_in_headless_chromium_through_the_stack(stack: LocalStack, service: str) -> None:
    require(chromium_binary() is not None, "chromium (apt-get install chromium)")
    assert stack.credentials is not None
    host = stack.settings.whisper_host if service == "whisper-faster" else stack.settings.whisperx_host
    token = base64.b64encode(f"{stack.credentials.user}:{stack.credentials.password}".encode()).decode()
    with client(stack) as http:
        title = http.get(f"https://{host}:{stack.settings.https_port}/openapi.json").json()["info"]["title"]
    with headless_page(authorization=f"Basic {token}") as page:
        page.call("Page.navigate", url=f"https://{host}:{stack.settings.https_port}/docs")
        # The title, or Swagger UI's own error box (an unusable definition), whichever renders first.
        shown = page.wait_for(
            "(document.querySelector('.swagger-ui .info .title') || {}).innerText"
            " || ((document.querySelector('.swagger-ui .version-pragma, .swagger-ui .errors-wrapper') || {}).innerText"
            " && 'SWAGGER ERROR: ' + document.body.innerText)",
            timeout_s=60,
        )
        screenshot = page.screenshot(ARTIFACTS / f"swagger-{service}.png")
        assert not shown.startswith("SWAGGER ERROR"), shown
        # Operations render from /openapi.json, fetched by the page's JavaScript through Nginx with basic auth.
        page.wait_for("document.querySelectorAll('.opblock').length > 0", timeout_s=30)
    assert shown.startswith(title), (shown, title)
    assert screenshot.stat().st_size > 10_000


def test_proxy_status_is_not_reachable_through_the_sites(stack: LocalStack) -> None:
    with client(stack, timeout=30) as http:
        response = http.get(f"https://{stack.settings.whisper_host}:{stack.settings.https_port}/_autostart/status")
    assert response.status_code == 404


def _tls(stack: LocalStack) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(stack.paths.cert))


def _wer(reference: str, hypothesis: str) -> float:
    def normalize(text: str) -> str:
        return re.sub(r"[^a-z' ]", " ", text.lower())

    return float(jiwer.wer(normalize(reference), normalize(hypothesis)))
