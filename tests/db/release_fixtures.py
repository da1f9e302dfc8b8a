"""What the fixtures of the release before schema versions (tests/db/fixtures/release-1c35a68/) hold: made by
`tests/db/fixtures/make_release_fixtures.py` with that release's store code."""
from __future__ import annotations

from pathlib import Path

RELEASE = Path(__file__).parent / "fixtures" / "release-1c35a68"
QUEUE = "whisper_faster"
FINISHED_JOB = "job_00000000000000000000000000000001"
FAILED_JOB = "job_00000000000000000000000000000002"
QUEUED_JOB = "job_00000000000000000000000000000003"
WEBHOOK_URL = "http://127.0.0.1:9/hooks/fixture"
SESSION = "sess_fixture"
SESSION_UTTERANCES = (("item_a", 0.5, 2.0, "Hello from a stored session."), ("item_b", 3.0, 4.5, "Still here after the upgrade."))
