"""Embedding throughput: fairl.lm.encode (cold cache) vs the bare library call, same texts, same run.

    python bench/encode.py [--encoder minilm|smollm2-meanpool] [--n 2000] [--rounds 2]

"bare" is what one would write without fairl: `SentenceTransformer.encode` for MiniLM
(it sorts by length itself), a plain batched forward + masked mean in input order for the
LM. Rounds alternate bare / ours and the best time of each is kept, so a busy machine
penalises both alike. Goal: ours / bare >= 0.8.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def bench_texts(n: int) -> list[str]:
    """Real text of output-like lengths: prompts plus the benign sentences they come from."""
    from fairl.data.prompts import BENIGN_SOURCES, benign_documents, load_prompts, split_sentences

    texts = [p.text for p in load_prompts()]
    for source in BENIGN_SOURCES:
        for document in benign_documents(source):
            texts += [s for s in split_sentences(document) if 20 < len(s) < 400]
    texts = list(dict.fromkeys(texts))
    rng = np.random.default_rng(0)
    return [texts[i] for i in rng.choice(len(texts), size=min(n, len(texts)), replace=False)]


def bare_minilm(encoder, texts, batch_size):
    return encoder.model.encode(texts, batch_size=batch_size, normalize_embeddings=True,
                                convert_to_numpy=True, show_progress_bar=False)


def bare_lm_meanpool(encoder, texts, batch_size):
    model, tokenizer = encoder._load()
    out = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(texts[start:start + batch_size], padding=True, truncation=True,
                              max_length=encoder.max_length, return_tensors="pt",
                              padding_side="right")
            hidden = model.base_model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).float()
            out.append(((hidden * mask).sum(1) / mask.sum(1)).numpy())
    return np.concatenate(out)


def main() -> None:
    from fairl.lm.encode import encode, get_encoder

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", default="minilm", choices=["minilm", "smollm2-meanpool"])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    batch_size = args.batch_size or (64 if args.encoder == "minilm" else 16)

    texts = bench_texts(args.n)
    encoder = get_encoder(args.encoder)
    bare = bare_minilm if args.encoder == "minilm" else bare_lm_meanpool
    bare(encoder, texts[:8], batch_size)  # load the model and warm up, outside the timing
    print(f"{len(texts)} texts, mean {np.mean([len(t) for t in texts]):.0f} chars, "
          f"encoder {encoder.id}, batch {batch_size}, torch threads {torch.get_num_threads()}, "
          f"load {os.getloadavg()[0]:.2f}")

    best = {"bare": np.inf, "ours": np.inf}
    for round_index in range(args.rounds):
        start = time.perf_counter()
        reference = bare(encoder, texts, batch_size)
        best["bare"] = min(best["bare"], time.perf_counter() - start)
        with tempfile.TemporaryDirectory() as cold:
            start = time.perf_counter()
            ours, stats = encode(texts, encoder, batch_size=batch_size, cache_root=cold,
                                 progress=False, return_stats=True)
            best["ours"] = min(best["ours"], time.perf_counter() - start)
            assert stats.n_encoded == len(set(texts)) and stats.n_cached == 0
            start = time.perf_counter()
            _, warm = encode(texts, encoder, cache_root=cold, progress=False, return_stats=True)
            warm_seconds = time.perf_counter() - start
            assert warm.n_encoded == 0
        gap = float(np.abs(ours - reference).max())
        print(f"round {round_index}: bare {len(texts) / best['bare']:.1f}/s, ours "
              f"{len(texts) / best['ours']:.1f}/s (best so far); warm-cache call "
              f"{warm_seconds:.2f} s; max |ours - bare| {gap:.1e}")
    bare_rate, ours_rate = len(texts) / best["bare"], len(texts) / best["ours"]
    print(f"bare {bare_rate:.1f} texts/s | fairl.lm.encode cold {ours_rate:.1f} texts/s | "
          f"ratio {ours_rate / bare_rate:.2f} (goal >= 0.8)")


if __name__ == "__main__":
    main()
