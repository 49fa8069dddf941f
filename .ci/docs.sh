#!/usr/bin/env bash
# The documentation step of CI: build the site strictly, then check it in a real browser.
#
#   bash .ci/docs.sh
#
# 1. `mkdocs build --strict` into site/ (any warning fails: broken links, missing pages,
#    API docstrings that do not resolve, notebooks holding error outputs).
# 2. The browser tests of tests/docs/ against that site: headless Debian Chromium driven by
#    playwright, pages served by `python -m http.server` on 127.0.0.1. Chromium is installed
#    with apt when missing (CI runs as root). Full-page screenshots go to site-screenshots/.
#
# Uses the `python` on PATH (override with PYTHON=...), which must have the `docs` extra
# installed. Exits non-zero on the first failure.
set -euo pipefail

cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
export NO_MKDOCS_2_WARNING=1

# docs/notebooks is a symlink to ../notebooks; a dangling symlink breaks the build.
if [ ! -d notebooks ]; then
    echo "docs: notebooks/ is missing; creating it empty so that docs/notebooks resolves"
    mkdir -p notebooks
fi

echo "docs: mkdocs build --strict"
"$PYTHON" -m mkdocs build --strict --site-dir site

if ! command -v chromium >/dev/null 2>&1; then
    echo "docs: installing Debian's chromium for the browser tests"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq chromium >/dev/null
fi

echo "docs: browser tests ($(chromium --version 2>/dev/null || echo chromium))"
rm -rf site-screenshots
FLOWLEARN_SITE_DIR="$PWD/site" FLOWLEARN_SCREENSHOT_DIR="$PWD/site-screenshots" \
    "$PYTHON" -m pytest tests/docs -q -p no:cacheprovider
