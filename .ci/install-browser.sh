#!/bin/sh
# Install Debian's chromium (report.pdf, the browser test of the report) and poppler-utils (pdftoppm,
# pdftotext: the page-by-page test of report.pdf) when they are missing.
# Idempotent, and never fails the CI: without apt-get or root it prints a notice and exits 0,
# and the tests that need them are skipped with their reason.
set -u

have() { command -v "$1" >/dev/null 2>&1; }
missing=""
have chromium || have chromium-browser || { [ -n "${CHROMIUM:-}" ] && have "$CHROMIUM"; } || missing="chromium"
have pdftoppm && have pdftotext || missing="$missing poppler-utils"
if [ -z "$missing" ]; then
    echo "chromium, poppler-utils: already installed"
    exit 0
fi

notice() {
    echo "notice: $missing not installed ($1); the tests that need them will be skipped."
    exit 0
}

have apt-get || notice "apt-get is not available"
if [ "$(id -u 2>/dev/null || echo 1)" = "0" ]; then
    AS_ROOT=""
elif have sudo && sudo -n true 2>/dev/null; then
    AS_ROOT="sudo -n"
else
    notice "not root and no password-less sudo"
fi

echo "installing Debian's$missing with apt-get"
# shellcheck disable=SC2086
if $AS_ROOT apt-get update -qq \
    && $AS_ROOT env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null; then
    echo "installed:$missing"
else
    notice "apt-get install failed"
fi
exit 0
