#!/usr/bin/env bash
# A test job process that writes a partial output and some logs, then fails with exit code ${1:-3}.
echo "partial result" > "$AZ_BATCHAI_OUTPUT_MODEL/partial.txt"
echo "working on it"
echo "something went wrong" >&2
exit "${1:-3}"
