#!/bin/sh
# hold-builds.sh CMD [ARGS...]: runs CMD while every compile on the machine (cargo, rustc,
# clippy-driver, rustdoc, cc, ld and build scripts) is held stopped with SIGSTOP, re-sent
# every 0.3 s so new ones stop too, then resumes them. Used to take BENCHMARKS.md's figures on
# a machine shared with builds; run `sync` inside CMD first so their writeback is done too.
( while [ -e /tmp/hold-builds.flag ]; do
    for p in $(pgrep -x 'rustc|cargo|cc|ld|cc1|collect2|clippy-driver|rustdoc') $(pgrep -f 'build-script-build'); do
      kill -STOP "$p" 2>/dev/null
    done
    sleep 0.3
  done ) &
touch /tmp/hold-builds.flag
sleep 0.5
"$@"
rc=$?
rm -f /tmp/hold-builds.flag
sleep 0.6
for p in $(pgrep -x 'rustc|cargo|cc|ld|cc1|collect2|clippy-driver|rustdoc') $(pgrep -f 'build-script-build'); do
  kill -CONT "$p" 2>/dev/null
done
exit $rc
