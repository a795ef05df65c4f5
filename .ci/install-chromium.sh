#!/bin/sh
# Install Debian's chromium (for report.pdf and the browser test of the report) when it is missing.
# Idempotent, and never fails the CI: without apt-get or root it prints a notice and exits 0,
# and the tests that need Chromium are skipped with their reason.
set -u

for exe in "${CHROMIUM:-}" chromium chromium-browser; do
    if [ -n "$exe" ] && command -v "$exe" >/dev/null 2>&1; then
        echo "chromium: already installed ($(command -v "$exe"))"
        exit 0
    fi
done

notice() {
    echo "notice: chromium not installed ($1); report.pdf and the browser test will be skipped."
    exit 0
}

command -v apt-get >/dev/null 2>&1 || notice "apt-get is not available"
if [ "$(id -u 2>/dev/null || echo 1)" = "0" ]; then
    AS_ROOT=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    AS_ROOT="sudo -n"
else
    notice "not root and no password-less sudo"
fi

echo "chromium: installing Debian's chromium package with apt-get"
if $AS_ROOT apt-get update -qq \
    && $AS_ROOT env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; then
    echo "chromium: installed ($(command -v chromium || echo 'not on PATH'))"
else
    notice "apt-get install chromium failed"
fi
exit 0
