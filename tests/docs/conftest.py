"""The documentation checks run only against a built site: `bash .ci/docs.sh`.

They need a site built by `mkdocs build --strict`, the Debian `chromium` binary and the
`playwright` Python package, so the main test run does not collect them. Set
`FLOWLEARN_SITE_DIR` to the built site (`.ci/docs.sh` does) to run them:

    mkdocs build --strict && FLOWLEARN_SITE_DIR=site python -m pytest tests/docs
"""

from __future__ import annotations

import os

collect_ignore_glob = [] if os.environ.get("FLOWLEARN_SITE_DIR") else ["*.py"]
