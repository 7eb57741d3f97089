#!/bin/bash
# Baseline (full fine-tune) on the demo with the real SmolLM2 at several learning rates; val loss + test accuracy.
set -e
cd /work/wt4 && export PYTHONPATH=/work/wt4/src:/work/wt4 PATH=/work/main/.venv/bin:$PATH MLFLOW_DISABLE_TELEMETRY=true HF_EVALUATE_OFFLINE=1 HF_HUB_OFFLINE=1 DO_NOT_TRACK=1 TOKENIZERS_PARALLELISM=false
P=/tmp/w4/demo
rm -rf $P/*; cp params.yaml $P/; cp -r evals $P/
sed -i 's#^  base: smollm2-135m-instruct.*#  base: /work/main/models/base#' $P/params.yaml
cd $P
for s in base_model ingest validate prepare; do loraops stage $s > $P/$s.log 2>&1; done
for lr in ${LRS:-5e-5 2e-5 1e-4}; do
  /usr/bin/time -v loraops stage baseline -S baseline.learning_rate=$lr -S train.progress_bar=false > $P/baseline_$lr.log 2>&1
  python - $lr <<'PY'
import json, sys
from pathlib import Path
from loraops.evaluation import evaluate_model
from loraops.core import read_jsonl, Layout
L = Layout(Path('.'))
m = json.loads(L.baseline_metrics.read_text())
rows = read_jsonl(L.prepared_dir / 'test.jsonl')
ev, _ = evaluate_model(L.full_model_dir, rows, 16, L.root)
out = {"learning_rate": float(sys.argv[1]), "val_loss": m["val_loss"], "best_val_loss": m["best_val_loss"],
       "steps": m["steps"], "train_seconds": m["train_seconds"], "peak_memory_mb": m["peak_memory_mb"],
       "tokens_per_second": m["tokens_per_second"], "test_accuracy": ev["accuracy"], "test_items": ev["items"]}
print(json.dumps(out))
with open('/tmp/w4/demo/baseline_sweep.jsonl', 'a') as f: f.write(json.dumps(out) + "\n")
PY
done
