#!/bin/bash
# issue 24: other jobs beside the series, until ${OUT:-/tmp/ci24d}/stop exists
i=0
while [ ! -e ${OUT:-/tmp/ci24d}/stop ]; do
  i=$((i+1))
  echo "$(date -u +%H:%M:%S) export $i start" >> ${OUT:-/tmp/ci24d}/beside.txt
  SRC=/work/main bash /tmp/exptime/run2.sh beside-$i
  echo "$(date -u +%H:%M:%S) export $i end: $(grep -E 'User time|System time|Elapsed' /tmp/exptime/beside-$i.log | tr -s ' \t' ' ' | tr '\n' ';')" >> ${OUT:-/tmp/ci24d}/beside.txt
  [ -e ${OUT:-/tmp/ci24d}/stop ] && break
  rm -rf /tmp/arm24d && git clone -q /work/main /tmp/arm24d && git -C /tmp/arm24d checkout -q 47c65cf
  t0=$(date +%s)
  echo "$(date -u +%H:%M:%S) test-arm $i start" >> ${OUT:-/tmp/ci24d}/beside.txt
  (cd /tmp/arm24d && make test-arm > ${OUT:-/tmp/ci24d}/arm-$i.log 2>&1)
  echo "$(date -u +%H:%M:%S) test-arm $i rc=$? s=$(( $(date +%s)-t0 )) $(tail -1 ${OUT:-/tmp/ci24d}/arm-$i.log)" >> ${OUT:-/tmp/ci24d}/beside.txt
  rm -rf /tmp/arm24d/.venv
done
