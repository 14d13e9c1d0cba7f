"""Stage fetch: $MNIST_MIRROR or the public mirrors -> data/raw/*.gz, each verified by digest."""

from __future__ import annotations

from common import bootstrap

bootstrap.start(__name__)  # first: Ctrl-C is one line while the libraries below load, too

import os

from common import paths
from ml import config, download


def main() -> None:
    params = config.load().fetch
    sources = download.sources_from(dict(os.environ), params.mirrors)
    limits = download.Limits(params.timeout_s, params.deadline_s, params.min_rate_bps)
    download.fetch_all(sources, paths.RAW_DIR, download.OFFICIAL_DIGESTS, params.retries, limits)
    print(f"MNIST is in {paths.RAW_DIR.relative_to(paths.ROOT)}/")


if __name__ == "__main__":
    bootstrap.run(main)
