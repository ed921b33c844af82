#!/usr/bin/env bash
# PeftGen's GPU check (built by scripts/gpu-bundle.sh; this file is .gpu/run.sh). Needs an NVIDIA driver, the CUDA
# libraries (toolkit or pip wheels: nvidia/cu13/lib, nvidia/*/lib) and, for the peer steps, python3 with torch,
# transformers and peft. Needs no .NET. Runs, in order, each with a time limit:
#   machine      what is here: GPU (nvidia-smi), python3 and its torch / transformers / peft
#   probe        the CUDA libraries found and loaded (and from where), the driver, the devices
#   kernels      every kernel compiled with NVRTC, each failure's log
#   tests        the CUDA tests: each kernel against the CPU, the backend's ops, optimizers, a short QLoRA run (losses and
#                final logits against the CPU), on-device dropout; every host test too; a skipped test fails
#   train        peftgen train --device cuda on stories260K (checkpoint, resume; no dropout, so the CPU draws no other
#                masks), the CPU's run of the same job, and the
#                adapter it wrote loaded again (eval on the GPU, generate on the CPU)
#   peft         a GPU-trained adapter loaded by Python PEFT: the same logits
#   bench        the GPU benchmark against transformers + PEFT bf16 LoRA at 1024 and 2048 tokens (tokens/s, peak memory, MFU)
# and writes one report, OUT_DIR/report.md (logs in OUT_DIR/logs). Without a CUDA device it ends after the probe (and the
# NVRTC compile, when NVRTC is there) with a "no CUDA device" report and exit code 2.
#
# usage: run.sh [OUT_DIR]      environment: PEFTGEN_GPU_CHECK_BUDGET (seconds for the whole run, default 570),
#                              PEFTGEN_PEAK_TFLOPS (the GPU's dense bf16 peak for MFU, default 989: H100 SXM)
# exit: 0 every step passed, 1 a step failed, 2 no CUDA device
set -u
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/out}
mkdir -p "$out/logs" "$out/work"
out=$(cd "$out" && pwd)
bin=$here/bin
report=$out/report.md
budget=${PEFTGEN_GPU_CHECK_BUDGET:-570}
started=$(date +%s)
# The test executable extracts its assemblies at first start (xunit opens the test assembly by its file): into OUT_DIR.
export PEFTGEN_KERNEL_CACHE=$out/work/kernel-cache DOTNET_BUNDLE_EXTRACT_BASE_DIR=$out/work/extract DOTNET_CLI_TELEMETRY_OPTOUT=1 PYTHONUNBUFFERED=1
names=(); results=(); seconds=(); notes=()

left() { echo $((budget - ($(date +%s) - started))); }

# step NAME LIMIT_SECONDS COMMAND...: runs with the smaller of its limit and the time left; logs to logs/NAME.log.
# Exit code 3 means "not available here" (no device, no NVRTC): recorded as $absent_label (default ABSENT), not FAIL.
absent_label=""
step() {
    local name=$1 limit=$2; shift 2
    local remaining; remaining=$(left)
    [ "$remaining" -lt "$limit" ] && limit=$remaining
    if [ "$limit" -lt 10 ]; then
        names+=("$name"); results+=("NOT RUN"); seconds+=(0); notes+=("no time left of the ${budget} s budget")
        write_report; return 124
    fi
    echo "== $name (limit ${limit} s)" >&2
    local t0; t0=$(date +%s)
    # bash -c runs the check's own functions (exported below) as well as programs.
    timeout -k 10 "$limit" bash -c '"$@"' "$name" "$@" > "$out/logs/$name.log" 2>&1
    local rc=$?
    local result=PASS note=""
    if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then result=FAIL; note="timed out after ${limit} s"
    elif [ $rc -eq 3 ] && [ -n "$absent_label" ]; then result=ABSENT; note=$absent_label
    elif [ $rc -ne 0 ]; then result=FAIL; note="exit code $rc"; fi
    names+=("$name"); results+=("$result"); seconds+=($(( $(date +%s) - t0 ))); notes+=("$note")
    echo "   $result ${note}" >&2
    write_report
    return $rc
}

verdict=""
write_report() {
    {
        echo "# PeftGen GPU check"
        echo
        echo "- verdict: **${verdict:-running}**"
        echo "- bundle: $(tr '\n' ' ' < "$here/BUNDLE.txt" 2>/dev/null)"
        echo "- machine: $(uname -srm), $(nproc) CPUs, $(hostname)"
        echo "- GPU: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -n 4 | tr '\n' ';' || true)"
        echo "- started $(date -u -d @"$started" +%Y-%m-%dT%H:%M:%SZ), $(( $(date +%s) - started )) s so far, budget ${budget} s"
        echo
        echo "| step | result | seconds | note |"
        echo "| --- | --- | --- | --- |"
        local i
        for i in "${!names[@]}"; do echo "| ${names[$i]} | ${results[$i]} | ${seconds[$i]} | ${notes[$i]} |"; done
        for i in "${!names[@]}"; do
            local log=$out/logs/${names[$i]}.log
            [ -f "$log" ] || continue
            echo
            echo "## ${names[$i]}: ${results[$i]}"
            echo
            echo '```'
            # The whole log when short; otherwise its head (what was found) and tail (how it ended).
            if [ "$(wc -l < "$log")" -le 120 ]; then cat "$log"; else head -n 30 "$log"; echo "[... $(wc -l < "$log") lines, see logs/${names[$i]}.log ...]"; tail -n 80 "$log"; fi
            echo '```'
        done
    } > "$report.tmp" && mv "$report.tmp" "$report"
}

machine() {
    uname -a
    echo "CPUs: $(nproc)"
    nvidia-smi || echo "nvidia-smi: not found or failed"
    echo "python3: $(command -v python3 || echo none)"
    python3 - <<'PY' || true
import importlib, sys
print("python", sys.version.split()[0], sys.prefix)
for name in ("torch", "transformers", "peft", "safetensors"):
    try:
        m = importlib.import_module(name)
        extra = ""
        if name == "torch":
            extra = f" cuda {m.version.cuda}, available {m.cuda.is_available()}" + (f", {m.cuda.get_device_name(0)}" if m.cuda.is_available() else "")
        print(f"{name} {m.__version__}{extra}")
    except Exception as e:
        print(f"{name}: not importable ({e.__class__.__name__}: {e})")
PY
    echo "loader cache:"; (ldconfig -p 2>/dev/null | grep -E 'libcuda\.so|libcublas|libnvrtc' | head -n 20) || true
}

# The end-to-end step: train on the GPU (checkpoint at 20, resumed to 40), the same job on the CPU, then the adapter loaded again.
train() {
    local model=$here/models/stories260K
    if [ ! -f "$model/stories260K.bin" ]; then echo "the bundle has no models/stories260K: rebuild it where ../shared/models exists"; return 1; fi
    local w=$out/work/train common
    rm -rf "$w"; mkdir -p "$w"
    common=(--model "$model/stories260K.bin" --tokenizer "$model/tok512.bin" --data "$here/data/stories.jsonl" --batch-size 8
        --max-length 64 --rank 8 --alpha 16 --dropout 0 --lr 3e-3 --quant nf4 --seed 1 --save-every 20)
    set -x
    "$bin/peftgen" train "${common[@]}" --device cuda --steps 20 --output "$w/gpu" || return 1
    "$bin/peftgen" train "${common[@]}" --device cuda --steps 40 --output "$w/gpu" --resume || return 1
    "$bin/peftgen" train "${common[@]}" --device cpu --steps 40 --output "$w/cpu" || return 1
    "$bin/peftgen" eval --model "$model/stories260K.bin" --tokenizer "$model/tok512.bin" --adapter "$w/gpu/adapter" --quant nf4 \
        --data "$here/data/stories.jsonl" --max-length 64 --device cuda --json > "$w/eval-gpu.json" || return 1
    "$bin/peftgen" eval --model "$model/stories260K.bin" --tokenizer "$model/tok512.bin" --adapter "$w/cpu/adapter" --quant nf4 \
        --data "$here/data/stories.jsonl" --max-length 64 --device cpu --json > "$w/eval-cpu.json" || return 1
    "$bin/peftgen" generate --model "$model/stories260K.bin" --tokenizer "$model/tok512.bin" --adapter "$w/gpu/adapter" \
        --prompt "Once upon a time" --max-tokens 40 --device cpu || return 1
    set +x
    echo "eval (GPU-trained adapter, on the GPU): $(cat "$w/eval-gpu.json")"
    echo "eval (CPU-trained adapter, on the CPU): $(cat "$w/eval-cpu.json")"
    # The GPU's bf16 GEMMs round differently from the CPU's float32: the two runs' losses agree within a tolerance.
    python3 - "$w" <<'PY'
import json, sys
w = sys.argv[1]
def losses(run):
    return [json.loads(l)["loss"] for l in open(f"{w}/{run}/metrics.jsonl")]
gpu, cpu = losses("gpu"), losses("cpu")
eg, ec = json.load(open(f"{w}/eval-gpu.json"))["loss"], json.load(open(f"{w}/eval-cpu.json"))["loss"]
print(f"steps: gpu {len(gpu)}, cpu {len(cpu)}; first loss gpu {gpu[0]:.4f} cpu {cpu[0]:.4f}; last gpu {gpu[-1]:.4f} cpu {cpu[-1]:.4f}")
worst = max(abs(a - b) for a, b in zip(gpu, cpu))
print(f"largest per-step loss difference: {worst:.4f} (tolerance 0.05 + 2% of the loss)")
ok = len(gpu) == len(cpu) == 40 and all(abs(a - b) <= 0.05 + 0.02 * abs(b) for a, b in zip(gpu, cpu))
ok = ok and gpu[-1] < gpu[0] and abs(eg - ec) <= 0.05 + 0.02 * abs(ec)
print(f"eval loss of the adapters: gpu {eg:.4f}, cpu {ec:.4f}")
print("train: " + ("PASS" if ok else "FAIL"))
sys.exit(0 if ok else 1)
PY
}

# Without a device, peftgen train --device cuda must refuse with the reason and exit code 4 (device not available).
cli_refuses_cuda() {
    "$bin/peftgen" train --model "$here/models/stories260K/stories260K.bin" --tokenizer "$here/models/stories260K/tok512.bin" \
        --data "$here/data/stories.jsonl" --output "$out/work/no-device" --device cuda
    local rc=$?
    echo "exit code $rc (4 expected: device not available)"
    [ $rc -eq 4 ]
}

peft_roundtrip() {
    local w=$out/work/peft
    rm -rf "$w"
    "$bin/PeftGen.Cuda.Tests" cuda-peft-export --out "$w" --device cuda:0 || return 1
    python3 "$bin/peers/peft_roundtrip_check.py" "$w"
}

export here out bin
export -f machine train peft_roundtrip cli_refuses_cuda
write_report
step machine 60 machine
absent_label="no CUDA device"
step probe 60 "$bin/PeftGen.Cuda.Tests" probe
probe_rc=$?
if [ $probe_rc -ne 0 ]; then
    # No usable device: what NVRTC makes of the kernels (when NVRTC is here), the host tests, then a clear report.
    absent_label="no NVRTC here"
    step kernels 120 "$bin/PeftGen.Cuda.Tests" compile-kernels
    absent_label=""
    step host-tests 180 "$bin/PeftGen.Cuda.Tests" -noColor -noLogo
    step cli 60 cli_refuses_cuda
    reason=$(grep -m1 -E '^no CUDA device' "$out/logs/probe.log" | cut -c1-300)
    verdict="NO CUDA DEVICE: ${reason:-the probe failed (exit code $probe_rc)}; nothing ran on a GPU"
    write_report
    echo "$verdict" >&2
    echo "report: $report" >&2
    exit 2
fi
absent_label=""
step kernels 150 "$bin/PeftGen.Cuda.Tests" compile-kernels
step tests 240 "$bin/PeftGen.Cuda.Tests" -noColor -noLogo -failSkips -xml "$out/logs/tests.xml"
step train 150 train
step peft 90 peft_roundtrip
step bench 420 "$bin/PeftGen.Cuda.Tests" cuda-train --device cuda:0 --peak-tflops "${PEFTGEN_PEAK_TFLOPS:-989}"
failed=0
for r in "${results[@]}"; do [ "$r" = PASS ] || failed=1; done
verdict=$([ $failed -eq 0 ] && echo "PASS: every step passed on the GPU" || echo "FAIL: see the steps below")
write_report
echo "$verdict" >&2
echo "report: $report" >&2
exit $failed
