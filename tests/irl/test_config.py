import dataclasses

import pytest

from fairl.config import ConfigError, build
from fairl.irl import FitConfig

# One invalid value per field; the error must name that field.
INVALID = {
    "objective": "max_likelihood",
    "M": 0.0,
    "tau": -1.0,
    "M_fail": 0.5,  # < M
    "tau_fail": 2.0,  # > tau
    "failure_mode": "oracle",
    "ensemble_size": 1,
    "dual_path": "sometimes",
    "fail_grad_to_base": "perhaps",
    "gamma_start": "low",
    "gamma_end": -0.5,  # < gamma_start
    "gamma_shape": "zigzag",
    "lambda0": -1.0,
    "lambda_decay": -0.1,
    "lambda_fixed": "no way",
    "lambda_decay_scaled": "by all means",
    "p0": 1.5,
    "p_end": -0.1,
    "failure_budget": "all",
    "failure_sampling": "easiest",
    "l2_fail": -1e-3,
    "optimizer": "lbfgs",
    "lr": 0.0,
    "rounds": 0,
    "batch_size": 0,
    "seed": -1,
    "device": "gpu9000",
}


def test_every_field_has_an_invalid_case():
    assert set(INVALID) == {f.name for f in dataclasses.fields(FitConfig)}


@pytest.mark.parametrize("field,value", INVALID.items())
def test_invalid_field_raises_error_naming_it(field, value):
    with pytest.raises(ConfigError) as error:
        build(FitConfig, {field: value}, "fit")
    assert f"fit.{field}:" in str(error.value)


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match=r"fit\.lambda_0: Unexpected"):
        build(FitConfig, {"lambda_0": 10}, "fit")


def test_cuda_request_without_cuda_is_rejected(monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    with pytest.raises(ConfigError, match="fit.device"):
        build(FitConfig, {"device": "cuda"}, "fit")


def test_defaults_follow_the_paper():
    config = FitConfig()
    assert (config.lambda0, config.p0, config.p_end, config.rounds) == (10.0, 0.2, 0.0, 100)
    assert config.M_fail > config.M and config.tau_fail < config.tau
    assert config.method == "fa_irl"
    assert FitConfig(failure_mode="none", dual_path=False).method == "standard_irl"


def test_every_field_documents_itself():
    for name, info in FitConfig.__pydantic_fields__.items():
        assert info.description, f"FitConfig.{name} has no description"
