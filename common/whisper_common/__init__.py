"""Code both services share, one job per module:

- `transcript`: Transcript / Segment / Word, the engine-independent result
- `speech_gate`: where a recording holds speech (Silero VAD, its state renewed): only that is decoded
- `speech_guard`: the hallucination guard's checks on decoded text (no-speech rule, no words, loops cut)
- `languages`: Whisper language codes <-> English names (`language_name`, `language_code`)
- `options`: the request options both services share (`TranscriptionOptions`, the field types, `FormModel`), the one
  language check and the one English-only check (`check_model_supports`)
- `forms`: `check_form_body` (a body that is not a form, a single-valued field sent twice)
- `schemas`: pydantic models of the OpenAI bodies for OpenAPI (`TRANSCRIPTION_RESPONSES`)
- `openai_formats`: json, text, srt, vtt, verbose_json, diarized_json and the SSE events, from a Transcript
- `errors`: named domain errors and `install_error_handlers` (OpenAI error JSON, once, at the edge)
- `uploads`: `UploadLimitMiddleware` (413 while streaming) and `decode_audio` (PyAV -> 16 kHz mono float32)
- `owners`: `Owner` (name, role, quota), `owner_of(request)`, `owner_filter` (the SQL condition every store adds)
- `keys`: named API keys, hashed in a keys file (`python -m whisper_common.keys add|list|revoke`), `KeyRing`
- `auth`: `OwnerMiddleware` (who is calling: an API key, a trusted edge user, or nobody; 401 otherwise)
- `usage`: per-owner usage (Prometheus counters, the usage table, `GET /v1/usage`)
- `quotas`: per-owner quotas (`QuotaGuard`, `QuotaMiddleware`: 429 with Retry-After)
- `erasure`: `DELETE /v1/owners/{me|owner}/data` over the erasers each store registers
- `metrics`: `ServiceMetrics` (prometheus-client, `record_inference`) and `/metrics`
- `model_manager`: `ModelManager` (load once, reference count, idle TTL, preload)
- `concurrency`: `InferenceGate` (MAX_CONCURRENCY, MAX_QUEUE -> 503), `run_in_worker`, `iterate_in_worker`
- `log`: JSON logging, request ids, access log
- `docs_ui`: Swagger UI from local assets
- `settings`: `ServiceSettings` / `WhisperSettings` (pydantic-settings) and `describe_settings`
- `app`: `create_service_app`, the factory both services call
"""
