"""Serve a model over HTTP: MLflow's scoring server behind request guards.

    python src/serve.py                            # the champion on http://127.0.0.1:5001
    python src/serve.py --model "models:/mnist-cnn/3" --host 0.0.0.0 --port 8080

The protocol is `mlflow models serve`'s: POST /invocations {"inputs": [...]} -> {"predictions"},
GET /ping. What differs is in front of it (request_guards.py): a POST without Content-Type, a body
over --max-body-mb, or JSON that does not parse each get a short 4xx, never the body echoed back.
"""

from __future__ import annotations

from common import bootstrap

bootstrap.start(__name__)  # first: Ctrl-C is one line while the libraries below load, too

import argparse

import uvicorn

from inference.request_guards import RequestGuards
from ml import config, runtime
from tracking import models, registry

# Sized to the largest request the model takes: 10,000 images (served_model.MAX_IMAGES) of
# 784 pixels at up to 7 bytes each ("[255], " in the (N, 28, 28, 1) form) are ~55 MB of JSON.
MAX_BODY_MB = 64


def main() -> None:
    params = config.load()
    default = f"models:/{params.tracking.registered_model}@{registry.CHAMPION}"
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=default, help=f"model URI ({default})")
    parser.add_argument("--host", default="127.0.0.1", help="0.0.0.0 to listen on every interface")
    parser.add_argument("--port", type=int, default=5001)
    parser.add_argument("--max-body-mb", type=float, default=MAX_BODY_MB, help="request size cap")
    parser.add_argument(
        "--trust-model-code",
        action="store_true",
        help="serve a model whose code differs from this checkout's (it runs as you)",
    )
    args = parser.parse_args()
    runtime.configure()
    scoring = models.scoring_app(args.model, args.trust_model_code)
    app = RequestGuards(scoring, int(args.max_body_mb * 1_000_000))
    version = models.resolved_version(args.model)
    print(f"serving {args.model}" + (f" (version {version})" if version else ""), flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")


if __name__ == "__main__":
    bootstrap.run(main)
