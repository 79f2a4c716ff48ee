#!/usr/bin/env bash
# Headless Chromium and its WebDriver for tests/runs/test_browser.py (Selenium drives them by
# these paths; nothing is downloaded at test time). Installs Debian's chromium and
# chromium-driver only when either is missing.
set -euo pipefail
if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq chromium chromium-driver > /dev/null
[ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]
