"""Log-probabilities of completions under a causal LM: per token (RLHF's loss and KL), per
sequence (the KL estimate of a world), and perplexity."""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from fairl import devices
from fairl.lm.load import model_device
from fairl.lm.sample import _left_pad, encode_prompts


def completion_logprobs(
    model,
    prompt_ids: list[list[int]],
    completion_ids: list[list[int]],
    *,
    pad_id: int,
    temperature: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token log-probs (B, C) of each completion given its prompt, and their mask (B, C).

    Prompts are left-padded and completions right-padded so every completion starts at
    the same column and only the last C + 1 positions need logits. Runs with gradients
    unless the caller disables them.
    """
    width = max((len(c) for c in completion_ids), default=0)
    if width == 0:
        return torch.zeros((len(prompt_ids), 0)), torch.zeros(
            (len(prompt_ids), 0), dtype=torch.bool
        )
    prompt_tensor, prompt_mask = _left_pad(prompt_ids, pad_id)
    targets = torch.full((len(completion_ids), width), pad_id, dtype=torch.long)
    target_mask = torch.zeros((len(completion_ids), width), dtype=torch.bool)
    for i, row in enumerate(completion_ids):
        targets[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        target_mask[i, : len(row)] = True
    device = model_device(model)
    targets, target_mask = targets.to(device), target_mask.to(device)
    ids = torch.cat([prompt_tensor.to(device), targets], dim=1)
    mask = torch.cat([prompt_mask.to(device), target_mask.long()], dim=1)
    # Same positions as `generate` uses for left-padded prompts.
    positions = (mask.cumsum(-1) - 1).clamp_(min=0)
    logits = (
        model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            logits_to_keep=width + 1,
            use_cache=False,
        )
        .logits[:, :-1]
        .float()
    )  # (B, C, V): position t predicts completion token t
    if temperature != 1.0:
        logits = logits / temperature
    picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    logprobs = (picked - torch.logsumexp(logits, dim=-1)) * target_mask
    return logprobs, target_mask


def _scored(model, tokenizer, prompts, completions, batch_size, progress):
    batch_size = devices.batch_size("logprobs", str(model_device(model)), batch_size)
    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
    prompt_ids = encode_prompts(tokenizer, prompts)
    completion_ids = (
        tokenizer(list(completions), add_special_tokens=False)["input_ids"] if completions else []
    )
    order = sorted(range(len(prompts)), key=lambda i: len(prompt_ids[i]) + len(completion_ids[i]))
    sums = np.zeros(len(prompts))
    counts = np.zeros(len(prompts), dtype=np.int64)
    with torch.inference_mode():
        for start in tqdm(
            range(0, len(order), batch_size), desc="score", disable=not progress, leave=False
        ):
            rows = order[start : start + batch_size]
            logprobs, mask = completion_logprobs(
                model,
                [prompt_ids[i] for i in rows],
                [completion_ids[i] for i in rows],
                pad_id=tokenizer.pad_token_id,
            )
            sums[rows] = logprobs.sum(-1).double().cpu().numpy()
            counts[rows] = mask.sum(-1).cpu().numpy()
    return sums, counts


def sequence_logprobs(
    model,
    tokenizer,
    prompts: list[str],
    completions: list[str],
    *,
    batch_size: int | None = None,
    progress: bool = False,
) -> np.ndarray:
    """Summed log-probability (nats) of each completion given its prompt, shape (n,)."""
    return _scored(model, tokenizer, prompts, completions, batch_size, progress)[0]


def perplexity(
    model,
    tokenizer,
    prompts: list[str],
    completions: list[str],
    *,
    batch_size: int | None = None,
    progress: bool = False,
) -> float:
    """exp of the mean negative log-probability per completion token, over all completions."""
    sums, counts = _scored(model, tokenizer, prompts, completions, batch_size, progress)
    if counts.sum() == 0:
        raise ValueError("perplexity of empty completions is undefined")
    return float(np.exp(-sums.sum() / counts.sum()))
