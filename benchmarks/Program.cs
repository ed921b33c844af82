using PeftGen.Benchmarks;

// Each benchmark prints one JSON line per result on stdout; progress goes to stderr.
return args.FirstOrDefault() switch
{
    "gemm" => GemmBenchmark.Run(args[1..]),
    "attention" => AttentionBenchmark.Run(args[1..]),
    "train" => TrainBenchmark.Run(args[1..]),
    "generator" => GeneratorBenchmark.Run(args[1..]),
    "io" => IoBenchmark.Run(args[1..]),
    "quickstart" => QuickStartBenchmark.Run(args[1..]),
    "methods" => MethodsBenchmark.Run(args[1..]),
    "memory" => MemoryBenchmark.Run(args[1..]),
    "cuda-train" => CudaTrainBenchmark.Run(args[1..]),
    "cuda-peft-export" => CudaTrainBenchmark.Export(args[1..]),
    "robustness" => RobustnessBenchmark.Run(args[1..]),
    _ => Usage(),
};

static int Usage()
{
    Console.Error.WriteLine("""
        usage: dotnet run -c Release --project benchmarks -- <benchmark> [options]
          gemm                                   SGEMM GFLOP/s at 1024^3 and 2048^3 vs OpenBLAS (2 threads); bf16/fp16 linear vs float32 SGEMM
          attention [--seconds 2]                causal attention forward/backward ms and GFLOP/s (stories15M training, GQA, decode) vs the previous kernel
          train --config stories15m --mode none  forward+backward tokens/s of a stories15M-shaped Llama
          generator                              source generator ms on a Llama-2-7B model: full run, incremental after an unrelated edit (vs a floor)
          io                                     1 GiB safetensors open + read one tensor (vs full read); tokenizer encode MB/s
          quickstart                             wall time of the README main command (dotnet run of samples/QuickStart)
          methods [--steps 150]                  every fine-tuning method on one task: parameters, memory, tokens/s, loss -> docs/methods.md
          memory [--models tinyllama,llama7b]    peak RSS of `peftgen train` per phase (nf4/none, checkpointing on/off) vs the predicted peak, bf16 1.1B and 7B shapes
          cuda-train --device cuda:0             QLoRA tokens/s, MFU, peak GPU memory of a TinyLlama-1.1B shape (seq 1024, 2048) vs PEFT bf16 LoRA
          cuda-peft-export --out DIR             a base + PeftGen-trained LoRA adapter + logits for peers/peft_roundtrip_check.py
          robustness [--inputs 2000] [--seed S]  mutated user files per parser (safetensors, configs, tokenizers, llama2.c, JSONL, checkpoints): crashes, hangs, allocation
        """);
    return 2;
}
