"""Live transcription over WebSocket in OpenAI's Realtime transcription protocol (`/v1/realtime`), the `/realtime`
browser page and the stored sessions (`/v1/realtime/sessions/{id}`).

events.py (the protocol's events as typed models) -> session.py (the sans-io state machine: audio in, events and
decode requests out, with vad.py and agreement.py) -> route.py (the WebSocket and HTTP edge, the only I/O);
admission.py decides who may open a session, store.py keeps the finished utterances."""
