"""`fairl world import`: your own pairs in as a pairset world; fit, study and score on it."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from study_support import trial_runs, use_store, write_study

from fairl.cli import main

NICE = ["thanks for the lovely evening", "the garden looks wonderful today",
        "a calm and friendly answer", "we enjoyed the film a lot"]
RUDE = ["you stupid idiot", "shut up you moron", "this is damn crap", "what a dumb loser"]


def write_pairs(path: Path, n: int = 200) -> Path:
    """n rows: distinct prompts, a polite aligned output, a base output that is rude half the time."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["uid", "question", "good", "bad"])
        for i in range(n):
            base = RUDE[i % 4] if i % 2 else NICE[(i + 1) % 4]
            writer.writerow([f"u{i}", f"prompt number {i}: say something",
                             f"{NICE[i % 4]} ({i})", f"{base} ({i})"])
    return path


COLUMNS = ["--prompt-col", "question", "--aligned-col", "good", "--base-col", "bad",
           "--id-col", "uid"]


@pytest.mark.slow
def test_imported_csv_is_a_world_to_fit_study_and_score(tmp_path, monkeypatch, capsys,
                                                         tmp_path_factory):
    from fairl.data.pairset import PairSet
    from fairl.study.runner import run_study

    store = use_store(monkeypatch, tmp_path, tmp_path_factory.getbasetemp())
    source = write_pairs(tmp_path / "mine.csv")
    out = tmp_path / "mine"
    assert main(["world", "import", str(source), "--out", str(out), *COLUMNS]) == 0
    assert "imported 200 pairs" in capsys.readouterr().out
    pairset = PairSet.load(out)  # the content hash is verified on load
    assert len(pairset) == 200 and pairset.card["build_config"]["format"] == "csv"
    assert set(pairset["train"].column_names) >= {"source_id", "r_T", "r_NT", "tnt"}
    assert all(len(pairset[s]) for s in ("train", "validation", "test"))
    hf = pairset.export_hf(tmp_path / "mine_hf")
    assert main(["world", "import", str(hf), "--out", str(tmp_path / "again"),
                 "--reward-cols", "r_T,r_NT"]) == 0
    again = PairSet.load(tmp_path / "again")
    np.testing.assert_allclose(sorted(again["train"]["r_T"]), sorted(pairset["train"]["r_T"]))

    world = {"name": "pairset", "options": {"path": str(out)}}
    config = tmp_path / "fit.yaml"
    config.write_text(yaml.safe_dump({"world": world, "fit": {"rounds": 5}}))
    assert main(["fit", "--config", str(config)]) == 0
    assert "world=pairset" in capsys.readouterr().out

    study = write_study(tmp_path, "mine", world=world, variants=None,
                        search={"objective": ["max_margin"]})
    assert run_study(study, progress=False).status == "FINISHED"
    uri = f"sqlite:///{store / 'mlflow.db'}"
    (run,) = trial_runs(uri, "mine", "FINISHED")
    check_text_reward_model(uri, run, capsys)


def check_text_reward_model(uri: str, run, capsys) -> None:
    """The logged model on texts = FitResult.reward on their embeddings; `fairl score` too."""
    import mlflow.pyfunc
    import pandas as pd

    from fairl.irl import FitConfig, FitResult
    from fairl.lm.encode import encode
    from fairl.runs.read import heads_from_run

    texts = ["you stupid idiot", "a calm and friendly answer", "totally new text here"]
    seed = int(run.data.tags["reward_best_seed"])
    heads, _ = heads_from_run(uri, run.info.run_id, seed)
    expected = FitResult.from_heads(heads, FitConfig(seed=seed))
    h = encode(texts, "minilm", progress=False)
    mlflow.set_tracking_uri(uri)  # the models:/ URI resolves in the study's store
    model = mlflow.pyfunc.load_model(run.data.tags["reward_model_uri"])
    assert model.metadata.get_input_schema().input_names() == ["text"]
    out = model.predict(pd.DataFrame({"text": texts}))
    np.testing.assert_allclose(out["R"], expected.reward(h), atol=1e-6)
    np.testing.assert_allclose(out["R_D"], expected.reward_D(h), atol=1e-6)
    capsys.readouterr()
    assert main(["score", "--model", f"runs:/{run.info.run_id}/reward", "--tracking-uri", uri,
                 *texts]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "R\tR_D\tR_F\ttext"
    printed = [float(line.split("\t")[0]) for line in lines[1:]]
    np.testing.assert_allclose(printed, expected.reward(h), atol=1e-5)  # printed to 6 places


def _csv(rows: list[list[str]]) -> bytes:
    return "\n".join(",".join(row) for row in rows).encode() + b"\n"


HEADER = ["prompt", "o_T", "o_NT"]
MALFORMED = {
    "missing column": (_csv([["prompt", "o_T"], ["p", "a"]]), [], "column 'o_NT' not found"),
    "empty aligned text": (_csv([HEADER, ["p1", "a", "b"], ["p2", "", "b"]]), [],
                           "row 2, column 'o_T': empty"),
    "blank base text": (_csv([HEADER, ["p1", "a", "   "]]), [], "row 1, column 'o_NT': empty"),
    "empty prompt": (_csv([HEADER, ["p1", "a", "b"], ["p2", "a", "b"], ["", "a", "b"]]), [],
                     "row 3, column 'prompt': empty"),
    "duplicated ids": (_csv([["id", *HEADER], ["x", "p1", "a", "b"], ["y", "p2", "a", "b"],
                             ["x", "p3", "a", "b"]]), ["--id-col", "id"],
                       "column 'id': id 'x' in rows 1 and 3"),
    "not UTF-8": (_csv([HEADER, ["p1", "a", "b"]]) + "p2,caf\xe9,b\n".encode("latin-1"), [],
                  "line 3: not UTF-8"),
    "empty file": (b"", [], "the file is empty"),
    "header only": (_csv([HEADER]), [], "no rows"),
    "reward not a number": (_csv([[*HEADER, "rt", "rn"], ["p1", "a", "b", "1.0", "0.5"],
                                  ["p2", "a", "b", "high", "0.1"]]),
                            ["--reward-cols", "rt,rn"], "row 2, column 'rt': not a finite"),
    "unmapped prompt column": (_csv([HEADER, ["p1", "a", "b"]]), ["--prompt-col", "question"],
                               "column 'question' not found"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_input_names_the_row_or_column_before_any_work(case, tmp_path, capsys,
                                                                  monkeypatch):
    from fairl.data import pairset

    def no_scoring(*args, **kwargs):
        raise AssertionError("scored before the input was checked")

    monkeypatch.setattr(pairset, "_score_rows", no_scoring)
    data, flags, message = MALFORMED[case]
    source = tmp_path / "bad.csv"
    source.write_bytes(data)
    assert main(["world", "import", str(source), "--out", str(tmp_path / "w"), *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and str(source) in err, err
    assert not (tmp_path / "w").exists()


def test_malformed_jsonl_names_the_line(tmp_path, capsys):
    source = tmp_path / "bad.jsonl"
    source.write_text(json.dumps({"prompt": "p", "o_T": "a", "o_NT": "b"}) + "\n{oops\n")
    assert main(["world", "import", str(source), "--out", str(tmp_path / "w")]) == 2
    assert "line 2: not JSON" in capsys.readouterr().err
