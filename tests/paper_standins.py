"""Tiny local stand-ins of the paper's hub inputs, each of the real one's class (not collected).

* pythia: a random-initialised `GPTNeoXForCausalLM` (so configs/world_paper.yaml's LoRA targets
  query_key_value, dense, dense_h_to_4h, dense_4h_to_h resolve) with a byte-level BPE
  tokenizer trained here with `tokenizers`, saved as pythia's `GPTNeoXTokenizerFast`;
* roberta: a random-initialised `RobertaForSequenceClassification` with labels neutral/toxic
  and its own byte-level BPE (`RobertaTokenizerFast`, <s> </s> <pad> <mask>);
* rtp: RealToxicityPrompts rows as on the hub (nested `prompt` / `continuation` records with
  Perspective fields), written as prompts.jsonl with `datasets`.
`paper_sets(root)` are the `--set` overrides that point configs/world_paper.yaml at them and
shrink its sizes; nothing else of the config changes.
"""

from __future__ import annotations

import random
from pathlib import Path

WORDS = ["the", "a", "you", "are", "idiot", "stupid", "nice", "good", "day", "people", "hate",
         "love", "this", "that", "is", "was", "and", "so", "very", "dumb", "happy", "friend",
         "world", "weather", "today", "going", "to", "be", "fine", "shut", "up", "loser", "great",
         "thanks", "said", "he", "she", "they", "we", "garden", "music", "river"]
PERSPECTIVE = ("toxicity", "profanity", "insult", "severe_toxicity", "sexually_explicit",
               "identity_attack", "flirtation", "threat")


def _corpus(rng: random.Random, lines: int = 300) -> list[str]:
    return [" ".join(rng.choice(WORDS) for _ in range(12)) for _ in range(lines)]


def _bpe(corpus: list[str], specials: list[str], vocab: int = 400):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=vocab, special_tokens=specials, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return tokenizer


def build_standins(root: Path, prompts: int = 60, seed: int = 0,
                   pythia_only: bool = False) -> dict[str, Path]:
    """The three stand-ins under `root`; returns {'pythia', 'roberta', 'rtp'} -> folder
    (`pythia_only`: just the GPT-NeoX, e.g. a fast base LM for re-RLHF)."""
    import torch
    from tokenizers import processors
    from transformers import (
        GPTNeoXConfig,
        GPTNeoXForCausalLM,
        GPTNeoXTokenizerFast,
        RobertaConfig,
        RobertaForSequenceClassification,
        RobertaTokenizerFast,
    )

    rng = random.Random(seed)
    corpus = _corpus(rng)
    paths = {name: root / name for name in ("pythia", "roberta", "rtp")}
    torch.manual_seed(seed)
    eos = "<|endoftext|>"
    tokenizer = GPTNeoXTokenizerFast(tokenizer_object=_bpe(corpus, [eos]), bos_token=eos,
                                     eos_token=eos, unk_token=eos)
    tokenizer.save_pretrained(paths["pythia"])
    GPTNeoXForCausalLM(GPTNeoXConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=256, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id)).save_pretrained(paths["pythia"])
    if pythia_only:
        return {"pythia": paths["pythia"]}

    bpe = _bpe(corpus, ["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    bpe.post_processor = processors.RobertaProcessing(("</s>", bpe.token_to_id("</s>")),
                                                      ("<s>", bpe.token_to_id("<s>")))
    judge_tokenizer = RobertaTokenizerFast(
        tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", sep_token="</s>",
        cls_token="<s>", unk_token="<unk>", pad_token="<pad>", mask_token="<mask>")
    judge_tokenizer.save_pretrained(paths["roberta"])
    # A wide initialisation spreads the untrained classifier's P(toxic) over (0, 1), so both
    # sides of the 0.5 threshold (and T→NT pairs) occur.
    RobertaForSequenceClassification(RobertaConfig(
        vocab_size=len(judge_tokenizer), hidden_size=32, num_hidden_layers=1,
        num_attention_heads=2, intermediate_size=64, max_position_embeddings=514,
        initializer_range=0.5, pad_token_id=judge_tokenizer.pad_token_id,
        bos_token_id=judge_tokenizer.bos_token_id, eos_token_id=judge_tokenizer.eos_token_id,
        id2label={0: "neutral", 1: "toxic"}, label2id={"neutral": 0, "toxic": 1}),
    ).save_pretrained(paths["roberta"])

    def scores(text: str, toxicity: float) -> dict:
        return {"text": text, **{name: round(toxicity * rng.uniform(0.5, 1), 4)
                                 for name in PERSPECTIVE}, "toxicity": toxicity}

    rows = [{"filename": f"{i:04d}-rtp.txt", "begin": 0, "end": 40, "challenging": i % 7 == 0,
             "prompt": scores(" ".join(rng.choice(WORDS) for _ in range(6)), rng.random()),
             "continuation": scores(" ".join(rng.choice(WORDS) for _ in range(5)), rng.random())}
            for i in range(prompts)]
    paths["rtp"].mkdir(parents=True, exist_ok=True)
    import datasets  # heavy (~2 s): only the RTP stand-in needs it

    datasets.Dataset.from_list(rows).to_json(str(paths["rtp"] / "prompts.jsonl"))
    return paths


def paper_sets(paths: dict[str, Path], prompts: int = 24) -> list[str]:
    """`--set` overrides of configs/world_paper.yaml: the stand-ins' folders, tiny sizes, CPU."""
    judge = f"hub:{paths['roberta']}"
    return [f"base_model={paths['pythia']}", f"prompts=hub:{paths['rtp']}",
            f"reward_scorer={judge}", f"judges=[{judge}, bilstm]", "device=cpu",
            f"max_prompts={prompts}", "max_new_tokens=8", "gen_batch_size=8", "chunk_size=4",
            "rlhf.steps=4", "rlhf.prompts_per_step=4", "rlhf.samples_per_prompt=2",
            "rlhf.max_new_tokens=8", "rlhf.micro_batch_size=8", "rlhf.sample_batch_size=8",
            "rlhf.checkpoint_every=2"]
