"""Serve a model over HTTP: a page to try it by hand, and MLflow's scoring server.

    python src/serve.py                            # the champion on http://127.0.0.1:5001
    python src/serve.py --collect data/feedback    # + "wrong? pick the right digit" on the page
    python src/serve.py --model "models:/mnist-cnn/3" --host 0.0.0.0 --port 8080

http://127.0.0.1:5001/ is a page to draw a digit or drop a photo of one; POST /digit takes an
image's bytes (digit_app.py). The rest is `mlflow models serve`'s protocol: POST /invocations
{"inputs": [...]} -> {"predictions"}, GET /ping. In front of both (request_guards.py): a POST
without Content-Type, a body over --max-body-mb, or JSON that does not parse each get a short 4xx,
never the body echoed back.
"""

from __future__ import annotations

from common import bootstrap

bootstrap.start(__name__)  # first: Ctrl-C is one line while the libraries below load, too

import argparse
from pathlib import Path

import uvicorn

from inference import digit_app, feedback
from inference.request_guards import RequestGuards
from ml import config, runtime
from tracking import models, registry

# Sized to the largest request the model takes: 10,000 images (served_model.MAX_IMAGES) of
# 784 pixels at up to 7 bytes each ("[255], " in the (N, 28, 28, 1) form) are ~55 MB of JSON;
# a phone's 200-megapixel JPEG is 20-60 MB.
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
    parser.add_argument(
        "--collect",
        type=Path,
        metavar="DIR",
        help="store the corrections people make on the page in DIR (see data/feedback/README.md)",
    )
    parser.add_argument(
        "--collect-max",
        type=int,
        default=feedback.MAX_CORRECTIONS,
        metavar="N",
        help=f"corrections DIR may hold ({feedback.MAX_CORRECTIONS})",
    )
    args = parser.parse_args()
    runtime.configure()
    logged = models.load_pyfunc(args.model, args.trust_model_code)
    card = models.card(args.model)
    collection = feedback.Collection(args.collect, args.collect_max) if args.collect else None
    app = digit_app.build(logged.predict, card, models.scoring_app(logged), collection)
    guarded = RequestGuards(app, int(args.max_body_mb * 1_000_000))
    version = f" (version {card['version']})" if card["version"] else ""
    print(f"serving {args.model}{version}: the page is http://{args.host}:{args.port}/", flush=True)
    if collection:
        print(f"corrections made on the page go to {args.collect}/", flush=True)
    uvicorn.run(guarded, host=args.host, port=args.port, log_level="info")


if __name__ == "__main__":
    bootstrap.run(main)
