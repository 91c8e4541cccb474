#!/bin/sh
# Regenerate the README's pictures of the auditor's workbook and of the HTML report.
#
#   scripts/readme_picture.sh [WORKBOOK.xlsx]
#
# WORKBOOK defaults to the newest reports/*.xlsx (e.g. what `cas-audit demo` wrote).
# LibreOffice (headless) prints the workbook to PDF; pdftoppm (poppler-utils) turns pages
# into PNG: docs/workbook.png is the Summary (page 1), docs/workbook-findings.png the first
# page of the Findings sheet (page 2: the Summary prints on one page).
# Needs: soffice (apt: libreoffice-calc-nogui), pdftoppm (apt: poppler-utils).
set -eu

repo=$(cd "$(dirname "$0")/.." && pwd)
workbook=${1:-}
if [ -z "$workbook" ]; then
    workbook=$(ls -t "$repo"/reports/*.xlsx 2>/dev/null | head -n 1 || true)
    if [ -z "$workbook" ]; then
        echo "no workbook given and none in $repo/reports/ (run: cas-audit demo)" >&2
        exit 2
    fi
fi
[ -f "$workbook" ] || { echo "no such workbook: $workbook" >&2; exit 2; }
for tool in soffice pdftoppm; do
    command -v "$tool" >/dev/null 2>&1 || { echo "$tool not found on PATH" >&2; exit 2; }
done

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM
cp "$workbook" "$tmp/workbook.xlsx"
soffice --headless "-env:UserInstallation=file://$tmp/profile" \
    --convert-to pdf --outdir "$tmp" "$tmp/workbook.xlsx" >"$tmp/soffice.log" 2>&1 || {
    cat "$tmp/soffice.log" >&2; exit 1; }
[ -s "$tmp/workbook.pdf" ] || { echo "LibreOffice made no PDF:" >&2; cat "$tmp/soffice.log" >&2; exit 1; }

mkdir -p "$repo/docs"
pdftoppm -png -r 110 -f 1 -l 1 -singlefile "$tmp/workbook.pdf" "$repo/docs/workbook"
pdftoppm -png -r 110 -f 2 -l 2 -singlefile "$tmp/workbook.pdf" "$repo/docs/workbook-findings"
echo "wrote $repo/docs/workbook.png and $repo/docs/workbook-findings.png from $workbook"

# The HTML report (report --format html) beside the workbook, in headless Chromium
# (apt: chromium): docs/report-html.png.
page="${workbook%.xlsx}.html"
if [ -f "$page" ] && command -v chromium >/dev/null 2>&1; then
    cp "$page" "$tmp/report.html"
    chromium --headless --disable-gpu --no-sandbox --no-first-run "--user-data-dir=$tmp/chromium" \
        --hide-scrollbars --window-size=1200,1600 "--screenshot=$repo/docs/report-html.png" \
        "file://$tmp/report.html" >"$tmp/chromium.log" 2>&1 || { cat "$tmp/chromium.log" >&2; exit 1; }
    echo "wrote $repo/docs/report-html.png from $page"
else
    echo "no $page (or no chromium on PATH): docs/report-html.png not regenerated" >&2
fi
