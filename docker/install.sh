#!/usr/bin/env bash
# The image's install steps, also run by CI (.ci/run) so that they stay true without a Docker engine.
# Usage: docker/install.sh SOURCE_DIR   (installs jupyter_cifar with JupyterLab into the current Python)
set -euo pipefail
src="${1:-.}"
python -m pip install --no-cache-dir --upgrade pip
python -m pip install --no-cache-dir "${src}[lab]"
# The server extension is enabled by the package's own config; fail the build if it is not.
jupyter server extension list 2>&1 | grep -E "jupyter_cifar .*OK"
