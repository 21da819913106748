#!/bin/bash
# issue 24: make test on a clean clone, three times in a row, on the loaded machine
rev=$1
out=/tmp/ci24d
echo "tree $rev started $(date -u +%H:%M:%S)" > $out/summary.txt
(while true; do echo "$(date +%H:%M:%S) $(cut -d' ' -f1-3 /proc/loadavg)"; sleep 30; done) > $out/load.txt &
sampler=$!
for i in 1 2 3; do
  d=$out/run$i; rm -rf $d; git clone -q /work/main $d
  git -C $d checkout -q $rev
  t0=$(date +%s)
  (cd $d && CI=true make test) > $out/run$i.log 2>&1
  rc=$?
  echo "run $i rc=$rc seconds=$(( $(date +%s) - t0 )) ended $(date -u +%H:%M:%S) $(tail -1 $out/run$i.log | cut -c1-200)" >> $out/summary.txt
  rm -rf $d/.venv
  [ $rc -ne 0 ] && break
done
kill $sampler
echo done >> $out/summary.txt
