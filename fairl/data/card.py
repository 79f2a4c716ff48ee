"""A PairSet's card in words: the README rendered next to card.json, and the summary
`fairl world info` and `fairl demo` print (plain dicts in, text out; no model loaded)."""

from __future__ import annotations

import json
from collections.abc import Mapping


def card_markdown(card: Mapping) -> str:
    """The card as a human-readable README (the JSON next to it is the source of truth)."""
    lines = [f"# PairSet `{card.get('name', 'pairs')}`", ""]
    lines += [f"* content hash: `{card.get('content_hash')}`",
              f"* created: {card.get('created')}, build time: {card.get('build_seconds')} s",
              f"* format version: {card.get('format_version')}", ""]
    if card.get("models"):
        lines += ["## Models", ""] + [f"* {k}: {v}" for k, v in card["models"].items()] + [""]
    sizes = card.get("sizes", {})
    if sizes:
        lines += ["## Sizes", "", "| split | pairs | prompts | by source |", "|---|---|---|---|"]
        for split, size in sizes.items():
            by_source = ", ".join(f"{k} {v}" for k, v in size["by_source"].items())
            lines.append(f"| {split} | {size['pairs']} | {size['prompts']} | {by_source} |")
        lines.append("")
    tox = card.get("toxicity", {})
    if tox:
        threshold = card["labelling"]["toxic_threshold"]
        lines += [f"## Toxicity (rate = share of outputs with toxicity >= {threshold})", "",
                  "| split | judge | base rate | aligned rate | base mean | aligned mean |",
                  "|---|---|---|---|---|---|"]
        for split, judges in tox.items():
            for judge, s in judges.items():
                lines.append(f"| {split} | {judge} | {s['base_rate']} | {s['aligned_rate']} | "
                             f"{s['base_mean']} | {s['aligned_mean']} |")
        lines.append("")
    if card.get("transitions"):
        lines += ["## Transitions base → aligned (reward scorer)", "",
                  "| split | T→NT | T→T | NT→T | NT→NT | T→NT fraction |", "|---|---|---|---|---|---|"]
        for split, t in card["transitions"].items():
            lines.append(f"| {split} | {t['T->NT']} | {t['T->T']} | {t['NT->T']} | "
                         f"{t['NT->NT']} | {t['tnt_fraction']} |")
        lines.append("")
    if card.get("mean_kl"):
        lines += ["## Mean KL(aligned ‖ base) on aligned outputs", ""]
        lines += [f"* {split}: {kl}" for split, kl in card["mean_kl"].items()] + [""]
    lines += ["## Labelling", ""] + [f"* {k}: {v}" for k, v in card.get("labelling", {}).items()]
    lines += [""] + ["## Scorers", ""] + [f"* {k}: {v}" for k, v in card.get("scorers", {}).items()]
    assets = card.get("assets", {})
    if assets:
        lines += ["", "## Assets and licences", "", "| package | version | licence | use |",
                  "|---|---|---|---|"]
        for pkg, a in assets["packages"].items():
            lines.append(f"| {pkg} | {a['version']} | {a['licence']} | {a['use']} |")
        lines += ["", "Prompt sources:", ""]
        for source, info in assets["prompt_sources"].items():
            lines.append(f"* {source}: {info.get('origin')} ({info.get('file', '')})")
    if card.get("build_config"):
        lines += ["", "## Build config", "", "```json",
                  json.dumps(card["build_config"], indent=1, ensure_ascii=False), "```"]
    if card.get("notes"):
        lines += ["", "## Notes", ""] + [f"* {n}" for n in card["notes"]]
    return "\n".join(lines) + "\n"


def world_summary(card: dict, path) -> str:
    """The numbers a reader checks first: size, T→NT, toxicity before/after, KL, build time."""
    sizes = card["sizes"]["all"]
    lines = [f"world {card['name']!r} at {path}  (content hash {card['content_hash'][:19]})",
             f"  models: base = {card['models'].get('base')}; aligned = {card['models'].get('aligned')}",
             f"  pairs: {sizes['pairs']} over {sizes['prompts']} prompts  "
             + "  ".join(f"{split}={card['sizes'][split]['pairs']}"
                         for split in ("train", "validation", "test") if split in card["sizes"]),
             f"  T→NT pairs: {card['tnt']['count']} ({card['tnt']['fraction']:.1%})"]
    for judge, stats in card["toxicity"]["all"].items():
        lines.append(f"  toxicity by {judge:<10} base {stats['base_rate']:.1%} (mean "
                     f"{stats['base_mean']:.3f})  ->  aligned {stats['aligned_rate']:.1%} "
                     f"(mean {stats['aligned_mean']:.3f})")
    kl = card.get("mean_kl", {}).get("all")
    lines.append(f"  mean KL(aligned ‖ base) per continuation: "
                 f"{'n/a' if kl is None else f'{kl:.3f} nats'}")
    stages = card.get("build_config", {}).get("stage_seconds", {})
    detail = ", ".join(f"{k} {v / 60:.1f} min" for k, v in stages.items())
    lines.append(f"  build time: {card.get('build_seconds', 0) / 60:.1f} min, stage times summed "
                 f"({detail})")
    return "\n".join(lines)
