#!/usr/bin/env bash
# The wheel as a user gets it: build it, check that it ships flowlearn/irn/weights/ (the IRN models,
# the demo photo and its README), install it into a plain new virtual environment (nothing from
# the development one), and run `flowlearn demo` from a folder outside the source tree.
#
# Usage: .ci/wheel.sh [--allow-missing-weights]
#   --allow-missing-weights: while no trained model is shipped yet, check instead that the
#   installed demo fails cleanly (exit status 1, one line naming the missing models).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
allow_missing=0
case "${1:-}" in
  --allow-missing-weights) allow_missing=1 ;;
  "") ;;
  *) echo "usage: $0 [--allow-missing-weights]" >&2; exit 2 ;;
esac

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
say() { printf 'wheel: %s\n' "$*"; }

say "building"
# From a copy of the files git would commit (tracked + untracked, not ignored): a build/ left
# in the tree by an earlier build could put deleted modules into the wheel; none is left here.
mkdir "$work/src"
git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' f; do
  if [ -e "$f" ]; then printf '%s\0' "$f"; fi  # skip tracked files deleted in the tree
done | tar --null -T - -cf - | tar -xf - -C "$work/src"
python -m pip wheel "$work/src" --no-deps --quiet -w "$work/dist"
wheels=("$work"/dist/flowlearn-*.whl)
wheel=${wheels[0]}
say "built $(basename "$wheel") ($(du -k "$wheel" | cut -f1) KiB)"

# Exit status 3: the wheel ships no IRN model (the required files are there).
set +e
python - "$wheel" <<'EOF'
import re
import sys
import zipfile

names = zipfile.ZipFile(sys.argv[1]).namelist()
weights = sorted(n for n in names if n.startswith("flowlearn/irn/weights/"))
for name in weights:
    print(f"wheel:   {name}")
missing = {"flowlearn/irn/weights/README.md", "flowlearn/irn/weights/astronaut_256.png"} - set(weights)
if missing:
    sys.exit(f"wheel: error: the wheel lacks {', '.join(sorted(missing))} (package data)")
models = [n for n in weights if re.fullmatch(r"flowlearn/irn/weights/irn_x\d+\.(safetensors|pt)", n)]
sys.exit(0 if models else 3)
EOF
status=$?
set -e
models=1
if [ "$status" -eq 3 ]; then
  models=0
  if [ "$allow_missing" -eq 0 ]; then
    say "error: the wheel ships no IRN model (flowlearn/irn/weights/irn_x2.safetensors," \
        "irn_x4.safetensors); export them with benchmarks/export_pretrained.py," \
        "or pass --allow-missing-weights"
    exit 1
  fi
  say "no IRN model shipped yet (--allow-missing-weights): checking the error path"
elif [ "$status" -ne 0 ]; then
  exit "$status"
fi

say "installing into a new virtual environment"
python -m venv "$work/venv"
# --no-compile: byte-compiling all of torch takes longer than the demo imports.
"$work/venv/bin/python" -m pip install --quiet --no-compile -c "$root/.ci/constraints.txt" "$wheel"

mkdir "$work/elsewhere"
cd "$work/elsewhere"  # outside the source tree: only the installed wheel can be imported
location=$("$work/venv/bin/python" -c "import flowlearn; print(flowlearn.__file__)")
case "$location" in
  "$work/venv/"*) ;;
  *) say "error: flowlearn was imported from $location, not from the new environment"; exit 1 ;;
esac

say "flowlearn demo --out $work/demo"
set +e
"$work/venv/bin/flowlearn" demo --out "$work/demo" >"$work/demo.out" 2>"$work/demo.err"
status=$?
set -e
cat "$work/demo.err" "$work/demo.out"
if [ "$allow_missing" -eq 1 ] && [ "$models" -eq 0 ]; then
  if [ "$status" -ne 1 ] || ! grep -q "^flowlearn demo: error: no shipped IRN model" "$work/demo.err"; then
    say "error: without models the demo should fail with one 'no shipped IRN model' line"
    exit 1
  fi
  say "ok: the installed demo reports the missing models (exit status 1)"
  exit 0
fi
if [ "$status" -ne 0 ] || [ ! -s "$work/demo/demo.png" ]; then
  say "error: flowlearn demo failed (exit status $status) or wrote no demo.png"
  exit 1
fi
say "ok: demo.png written by the installed wheel"
