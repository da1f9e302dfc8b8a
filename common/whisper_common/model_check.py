"""`python -m whisper_common.model_check`: which models this service would load at start, and whether each is at hand
without a network (one JSON object per line: `{"model": ..., "source": "embedded" | "directory" | "cache" | null}`).

`make up` runs it inside each service's image, with the container's settings and its model-cache volume, to say
before the first request which model a service will load and to warn when it can be neither found nor downloaded.
"""
from __future__ import annotations

import json
import sys

from whisper_common.model_catalog import offline_source, resolve_model_id
from whisper_common.settings import ServiceSettings


def main() -> int:
    settings = ServiceSettings()
    models = settings.models_to_preload or [settings.whisper.model]
    for model in models:
        model_id = resolve_model_id(model, settings)
        print(json.dumps({"model": model_id, "source": offline_source(model_id, settings)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
