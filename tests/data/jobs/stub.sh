#!/bin/sh
# stands for apt, pip, cntk and the recipes' jobprep scripts: prints what it was asked to do
echo "stub: $(basename "$0") $*"
