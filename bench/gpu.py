"""GPU smoke benchmark: every model stage on --device beside the CPU, same run, same inputs.

    python bench/gpu.py [--device auto|cuda|cuda:N|cpu] [--scale 1.0] [--encoder minilm]
                        [--texts 20000] [--continuations 2000] [--rlhf-steps 5] [--fits 100]

Stages: encode `--texts` default-world outputs (no cache), generate `--continuations`
continuations of 24 tokens with SmolLM2 (sampling), `--rlhf-steps` RLOO steps (16 prompts x 4
samples, r* = profanity), `--fits` FA-IRL fits (100 rounds, 9 243 x 384, the default world's
training shape). `--scale` multiplies every count (e.g. 0.02 for a few CPU minutes). Without
CUDA it says so and runs the CPU column only. Each line: items/s on the CPU, on the device,
and the ratio; bf16 is used on the GPU where it has it (fairl.devices).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def world_texts(n: int) -> tuple[list[str], list[str]]:
    """n output texts (repeated if the world has fewer) and its distinct prompts."""
    from fairl.data.pairset import PairSet
    from fairl.paths import DEFAULT_WORLD_DIR

    pairset = PairSet.load(DEFAULT_WORLD_DIR)
    texts, prompts = [], []
    for split in pairset.splits.values():
        texts += list(split["o_T"]) + list(split["o_NT"])
        prompts += list(split["prompt"])
    texts = [text for text in texts if text.strip()]
    return (texts * (n // len(texts) + 1))[:n], list(dict.fromkeys(prompts))


def stage_encode(device: str, texts: list[str], encoder: str) -> float:
    from fairl.lm.encode import encode, get_encoder

    model = get_encoder(encoder, device=device)
    encode(texts[:64], model, cache=False, progress=False)  # load and warm up
    started = time.perf_counter()
    encode(texts, model, cache=False, progress=False)
    return len(texts) / (time.perf_counter() - started)


def stage_generate(device: str, prompts: list[str], n: int) -> float:
    from fairl import lm
    from fairl.devices import model_dtype

    model, tokenizer = lm.load_lm(device=device, dtype=model_dtype(device))
    chosen = (prompts * (n // len(prompts) + 1))[:n]
    lm.generate(model, tokenizer, chosen[:8], max_new_tokens=4, progress=False)  # warm-up
    started = time.perf_counter()
    lm.generate(model, tokenizer, chosen, max_new_tokens=24, progress=False)
    return n / (time.perf_counter() - started)


def stage_rlhf(device: str, prompts: list[str], steps: int) -> float:
    from fairl.data.scorers import get_scorer
    from fairl.lm.rlhf import RLHFConfig, train_policy

    config = RLHFConfig(steps=steps, checkpoint_every=10_000, device=device)
    with tempfile.TemporaryDirectory() as folder:
        result = train_policy("smollm2-135m-instruct", get_scorer("profanity").reward,
                              prompts[:512], config, out_dir=folder, reward_id="bench",
                              progress=False)
    return steps / result.seconds


def stage_fits(device: str, n: int) -> float:
    import torch

    from fairl.irl import FitConfig, fit

    rng = np.random.default_rng(0)
    h_T = rng.normal(size=(9243, 384)).astype(np.float32)
    h_NT = (h_T + rng.normal(scale=0.5, size=h_T.shape)).astype(np.float32)
    config = FitConfig(rounds=100, device=device)
    fit(h_T, h_NT, config)  # warm-up (CUDA context, kernels)
    started = time.perf_counter()
    for seed in range(n):
        fit(h_T, h_NT, FitConfig(rounds=100, device=device, seed=seed))
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return n / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies every count")
    parser.add_argument("--encoder", default="minilm", help="minilm or smollm2-meanpool")
    parser.add_argument("--texts", type=int, default=20_000)
    parser.add_argument("--continuations", type=int, default=2_000)
    parser.add_argument("--rlhf-steps", type=int, default=5)
    parser.add_argument("--fits", type=int, default=100)
    args = parser.parse_args()
    import torch

    from fairl.devices import dtype_name, model_dtype, resolve_device
    from fairl.lm import configure_threads

    configure_threads()  # $FAIRL_THREADS, else fairl.lm's choice for a busy machine
    device = resolve_device(args.device, "--device")
    counts = {key: max(1, round(getattr(args, key) * args.scale))
              for key in ("texts", "continuations", "rlhf_steps", "fits")}
    columns = ["cpu"] if device == "cpu" else ["cpu", device]
    if not torch.cuda.is_available():
        print("CUDA is not available on this machine: CPU column only")
    else:
        print(f"GPU: {torch.cuda.get_device_name(0)}, bf16 {torch.cuda.is_bf16_supported()}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads; counts {counts}; "
          f"dtypes {', '.join(f'{c}={dtype_name(model_dtype(c))}' for c in columns)}")
    texts, prompts = world_texts(counts["texts"])
    stages = [
        (f"encode {args.encoder}", "texts/s", lambda d: stage_encode(d, texts, args.encoder)),
        ("generate 24 tokens", "seqs/s",
         lambda d: stage_generate(d, prompts, counts["continuations"])),
        ("rlhf step (16x4)", "steps/s", lambda d: stage_rlhf(d, prompts, counts["rlhf_steps"])),
        ("fit 100 rounds", "fits/s", lambda d: stage_fits(d, counts["fits"])),
    ]
    print(f"{'stage':<22}{'unit':>9}" + "".join(f"{c:>12}" for c in columns)
          + ("   speedup" if len(columns) > 1 else ""))
    for name, unit, run in stages:
        rates = [run(column) for column in columns]
        line = f"{name:<22}{unit:>9}" + "".join(f"{rate:>12.3f}" for rate in rates)
        if len(rates) > 1:
            line += f"   {rates[1] / rates[0]:>6.1f}x"
        print(line, flush=True)


if __name__ == "__main__":
    main()
