# issue 24 cases 7-11 from the CLI on a real export with candidates (copy per case)
set -u
EK=/work/main/.venv/bin/edgekit
base=/tmp/edgekit-cases/r24
W=/tmp/edgekit-cases/c2; rm -rf $W; mkdir -p $W
line() { echo "| $1 | exit $2 | \`$(echo "$3" | grep -v '^$' | tail -n 2 | tr '\n' ' ' | cut -c1-300)\` |"; }
fresh() { rm -rf $W/r; cp -r $base $W/r; }
fresh; ls $W/r/export/candidates | head -3
c=$(ls $W/r/export/candidates | head -1)
printf '\xff' | dd of=$W/r/export/candidates/$c bs=1 seek=200 conv=notrunc 2>/dev/null
out=$($EK verify $W/r/export 2>&1); line "8: corrupted candidate" $? "$out"
fresh; printf '\xff' | dd of=$W/r/export/references.npz bs=1 seek=200 conv=notrunc 2>/dev/null
out=$($EK verify $W/r/export 2>&1); line "8: corrupted references.npz" $? "$out"
for key in ../x.onnx /etc/passwd; do
  fresh; python3 - "$W/r/export/manifest.json" "$key" <<'PY'
import json, sys
p, k = sys.argv[1:]; m = json.load(open(p)); m["artifacts"][k] = m["artifacts"]["model.onnx"]; json.dump(m, open(p, "w"))
PY
  out=$($EK verify $W/r/export 2>&1); line "9: manifest key $key" $? "$out"
done
fresh; mv $W/r/export/manifest.json /tmp/edgekit-cases/m.json; mkfifo $W/r/export/manifest.json
out=$(timeout 60 $EK predict $W/r/export/model.int8.onnx $W/r/sample.png 2>&1); line "11: manifest.json a FIFO" $? "$out"
fresh; rm $W/r/export/manifest.json; ln -s gone.json $W/r/export/manifest.json
out=$($EK predict $W/r/export/model.int8.onnx $W/r/sample.png 2>&1); line "11: manifest.json a dangling link" $? "$out"
fresh; mkdir -p $W/outside; echo secret > $W/outside/secret.onnx; ln -s $W/outside $W/r/export/linked
( $EK export $W/r --torchscript > $W/e1.log 2>&1; echo "ts exit $?" >> $W/e1.log ) &
sleep 2
( $EK export $W/r --onnx --fp16 > $W/e2.log 2>&1; echo "fp16 exit $?" >> $W/e2.log ) &
wait
tail -n1 $W/e1.log; grep -m1 waiting $W/e1.log $W/e2.log; tail -n1 $W/e2.log
python3 -c "import json;print('7: listed after both:', sorted(json.load(open('$W/r/export/manifest.json'))['artifacts']))"
ls -la $W/r/export | grep -c linked | sed 's/^/10: symlinked folder copied into the new export: /'
