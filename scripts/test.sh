#!/usr/bin/env bash
# Install everything the tests need into .venv and run the whole test suite.
# Usage: scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."

# torchcodec (datasets' audio decoder, used by the datasets-compatibility tests) needs FFmpeg's
# shared libraries; Debian's package provides them.
if ! ldconfig -p 2>/dev/null | grep -q libavcodec; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg >/dev/null
    else
        echo "warning: FFmpeg libraries not found; install ffmpeg (e.g. apt-get install ffmpeg)" >&2
    fi
fi

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'
exec .venv/bin/python -m pytest -q "$@"
