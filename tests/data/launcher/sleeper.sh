#!/usr/bin/env bash
# A test job process that never ends on its own: records its pid and a child's pid in $1, then waits.
# With "ignore-term" as $2 it ignores SIGTERM, so only SIGKILL stops it.
dir=$1
if [ "$2" = "ignore-term" ]; then trap '' TERM; fi
sleep 60 &
echo $! > "$dir/child-$$.pid"
echo $$ > "$dir/main-$$.pid"
echo "sleeping"
wait
