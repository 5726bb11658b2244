#!/usr/bin/env bash
# `make demo-v2`: both recipes through their migrated Azure ML CLI v2 files, run by `azbai ml` on the embedded
# default exactly as `az ml` would submit them: the datastore and compute files first, then the job file.
#   1. the CNTK MNIST quickstart: v2/job.yml (40 epochs of the real quickstart: ~14 min on 2 cores; set
#      CONVNET_MNIST_EPOCHS=2 for a quick look), ending with the test error on 1,000 held-out digits;
#   2. the style-transfer pipeline: v2/pipeline.yml (split → style, a parallel job → stitch) on a 3 s clip,
#      checked for every frame, the source's frame rate and its audio.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
azbai="${AZBAI:-azbai}"
py="${PYTHON:-python}"
out="${OUT_DIR:-out/demo-v2}"
run() { printf '\n$ %s\n' "$*" >&2; "$@"; }
create_assets() {  # az ml datastore create / az ml compute create, one per file
  for file in "$1"/datastores/*.yml; do run "$azbai" ml datastore create -f "$file"; done
  for file in "$1"/computes/*.yml; do run "$azbai" ml compute create -f "$file"; done
}
mkdir -p "$out"

# 1. MNIST
run "$azbai" migrate "$here/cntk-mnist/job.json" -o "$out/mnist" --target v2 >/dev/null
run "$py" "$here/cntk-mnist/prepare_data.py" "$out/mnist_cntk"
run "$azbai" storage upload --account devstoreaccount1 --share scripts --destination-path cntk --source "$here/cntk-mnist/ConvNet_MNIST.py"
run "$azbai" storage upload --account devstoreaccount1 --container data --destination-path mnist_cntk --source "$out/mnist_cntk" --incremental
create_assets "$out/mnist/v2"
run "$azbai" ml job create -f "$out/mnist/v2/job.yml" --stream | tee "$out/mnist.log"
final="$(grep '^Final Results' "$out/mnist.log" | tail -1)"

# 2. style transfer
run "$azbai" migrate "$here/style-transfer/pipeline.json" -o "$out/style" --target v2 >/dev/null
for name in split.py stitch.py video.py stylenet.py; do
  run "$azbai" storage upload --account devstoreaccount1 --share scripts --destination-path style-transfer --source "$here/style-transfer/$name" >/dev/null
done
PYTHONPATH="$here/style-transfer" run "$py" -c "import sys; from video import make_clip; make_clip(sys.argv[1], seconds=3.0, fps=24, size=(256, 256))" "$out/clip.mp4"
run "$azbai" storage upload --account devstoreaccount1 --container media --destination-path incoming --source "$out/clip.mp4"
create_assets "$out/style/v2"
name="$("$azbai" ml job create -f "$out/style/v2/pipeline.yml" | "$py" -c "import json, sys; print(json.load(sys.stdin)['name'])")"
run "$azbai" ml job stream -n "$name"
run "$azbai" ml job download -n "$name" --output-name output_video --download-path "$out" >/dev/null
styled="$(find "$out/$name/named-outputs/output_video" -name 'clip_styled.mp4' | head -1)"
PYTHONPATH="$here/style-transfer" "$py" - "$out/clip.mp4" "$styled" <<'PY'
import sys
from video import probe
source, styled = probe(sys.argv[1]), probe(sys.argv[2])
print(f"styled video: {sys.argv[2]}: {styled.frames} frames at {styled.fps} fps, audio {styled.audio_codec} "
      f"(source: {source.frames} frames at {source.fps} fps, audio {source.audio_codec})")
sys.exit(0 if (styled.frames, styled.fps) == (source.frames, source.fps) and styled.audio_codec else 1)
PY
printf '\nMNIST: %s\n' "$final"
