#!/usr/bin/env bash
# Builds the GPU check bundle: a git-ignored folder (.gpu/ by default, at most 60 MiB) that runs on a machine with an
# NVIDIA driver, the CUDA libraries (toolkit or pip wheels) and python3 with torch, transformers and peft, and no .NET:
#
#   .gpu/run.sh [OUT_DIR]       # on the GPU machine: writes OUT_DIR/report.md (default .gpu/out)
#
# Layout: bin/PeftGen.Cuda.Tests (the CUDA tests as an xunit.v3 executable, and the check's commands: probe,
# compile-kernels, cuda-train, cuda-peft-export), bin/peftgen (the CLI), bin/peers/*.py (the Python peers), both
# self-contained single-file linux-x64; models/stories260K (from ../shared, MIT), data/stories.jsonl, run.sh.
#
# usage: scripts/gpu-bundle.sh [OUT_DIR]      (needs the .NET SDK; run it on any x86-64 Linux machine)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root/.gpu}
build=$root/.gpu-build          # the bundle's own obj/bin (artifacts layout), apart from the normal build's
limit_mib=60
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1

case "$out" in /|"$root"|"$HOME") echo "refusing to clear $out" >&2; exit 2 ;; esac
rm -rf "$out"
mkdir -p "$out/bin" "$out/models" "$out/data"

echo "== publishing the CUDA test executable (xunit.v3, self-contained, single file, framework trimmed)"
dotnet publish "$root/tests/PeftGen.Cuda.Tests/PeftGen.Cuda.Tests.csproj" -c Release -p:GpuBundle=true \
    --artifacts-path "$build" -o "$out/bin" -v quiet -nologo
echo "== publishing the peftgen CLI (self-contained, single file, trimmed)"
dotnet publish "$root/src/Cli/PeftGen.Cli.csproj" -c Release -p:PeftGenCliBundle=true \
    --artifacts-path "$build" -o "$out/bin" -v quiet -nologo
# Only the two executables and the peers are needed; a referenced project's runtimeconfig and the like are not.
find "$out/bin" -maxdepth 1 -type f ! -name PeftGen.Cuda.Tests ! -name peftgen -delete
# The Python peers (also inside the test executable, which extracts them for cuda-train), for run.sh's PEFT round trip.
mkdir -p "$out/bin/peers"
cp "$root/benchmarks/peers/train_tinyllama_peft.py" "$root/benchmarks/peers/peft_roundtrip_check.py" "$out/bin/peers/"

# The small model of the end-to-end step: stories260K from the shared folder beside the repo (never from the repo).
shared=${PEFTGEN_SHARED:-}
if [ -z "$shared" ]; then
    dir=$root
    while [ "$dir" != / ]; do
        if [ -f "$dir/shared/models/stories260K/stories260K.bin" ]; then shared=$dir/shared; break; fi
        dir=$(dirname "$dir")
    done
fi
if [ -n "$shared" ] && [ -f "$shared/models/stories260K/stories260K.bin" ]; then
    cp -r "$shared/models/stories260K" "$out/models/"
else
    echo "warning: no shared/models/stories260K found (set PEFTGEN_SHARED): run.sh will skip the end-to-end train step" >&2
fi

# A small instruction-free text dataset in stories260K's vocabulary (plain TinyStories-like sentences).
python_free_data() {
    local names=(Lily Tom Mia Ben Sue Max Anna Sam)
    local things=("a red ball" "a big tree" "a little dog" "a shiny stone" "a blue kite" "a warm cake" "a small boat" "a happy cat")
    for i in $(seq 0 63); do
        local n=${names[$((i % 8))]} t=${things[$(((i / 8) % 8))]}
        printf '{"text": "Once upon a time, there was a little girl named %s. %s found %s in the park. %s was very happy and played all day."}\n' "$n" "$n" "$t" "$n"
    done
}
python_free_data > "$out/data/stories.jsonl"

cp "$root/scripts/gpu-run.sh" "$out/run.sh"
chmod +x "$out/run.sh" "$out/bin/PeftGen.Cuda.Tests" "$out/bin/peftgen"
{
    echo "PeftGen GPU check bundle"
    echo "commit: $(git -C "$root" rev-parse HEAD 2>/dev/null || echo unknown)$(git -C "$root" diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')"
    echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -srm)"
    echo "dotnet: $(dotnet --version)"
} > "$out/BUNDLE.txt"

bytes=$(du -sb "$out" | cut -f1)
echo "== $out: $((bytes / 1024 / 1024)) MiB ($bytes bytes)"
(cd "$out" && find . -type f -printf '%10s  %p\n' | sort -k2)
if [ "$bytes" -gt $((limit_mib * 1024 * 1024)) ]; then
    echo "error: the bundle is over $limit_mib MiB" >&2
    exit 1
fi
echo "run it on a GPU machine: $out/run.sh [OUT_DIR]"
