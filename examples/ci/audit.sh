#!/usr/bin/env bash
# Minimal CI step for any system: runs the audit, keeps the reports, and propagates auditmi's
# exit code (5 = "likely used": fail the pipeline). Usage: examples/ci/audit.sh SUSPECT ENCODER CAL REFERENCE
set -uo pipefail
suspect=${1:?suspect image folder}; encoder=${2:?encoder spec}; cal=${3:?calibration bundle}; ref=${4:?reference folder}
auditmi scan "$suspect" --encoder "$encoder" --calibration "$cal" --reference "$ref" \
  --json audit-report.json --html audit-report.html --fail-on likely-used --quiet
code=$?
case $code in
  0) echo "auditmi: no evidence of use (or inconclusive); see audit-report.html" ;;
  5) echo "auditmi: LIKELY USED - failing the pipeline; see audit-report.html" ;;
  *) echo "auditmi: audit could not run (exit $code)" ;;
esac
exit $code
