#!/usr/bin/env bash
# Install Chromium for the demo's browser test (tests/test_demo_browser.py) when no browser is found.
#
# Debian/Ubuntu only (apt-get). Idempotent and quiet: prints the browser's path and exits 0 when one
# is already there. Playwright drives this system browser; `playwright install` is never used.
set -euo pipefail

find_browser() {
    local name
    for name in chromium chromium-browser google-chrome google-chrome-stable; do
        if command -v "$name" >/dev/null 2>&1; then
            command -v "$name"
            return 0
        fi
    done
    return 1
}

if find_browser; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_browser.sh: no browser found and no apt-get here; install Chromium by hand" >&2
    exit 1
fi
sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
        echo "install_browser.sh: installing Chromium needs root (or sudo)" >&2
        exit 1
    fi
    sudo_cmd=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
${sudo_cmd[@]+"${sudo_cmd[@]}"} apt-get update -qq >/dev/null
# Debian names the package chromium; Ubuntu's chromium-browser is a snap wrapper, so prefer chromium.
if ! ${sudo_cmd[@]+"${sudo_cmd[@]}"} apt-get install -y -qq chromium >/dev/null 2>&1; then
    ${sudo_cmd[@]+"${sudo_cmd[@]}"} apt-get install -y -qq chromium-browser >/dev/null
fi
find_browser
