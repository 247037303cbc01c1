"""Run-config parsing and validation."""

from __future__ import annotations

from dataclasses import asdict, fields

import pytest

from fedunl_flwr.config import (
    ConfigError,
    RunConfig,
    config_hash,
    parse_int_list,
    pyproject_defaults,
)


def test_pyproject_defaults_equal_dataclass_and_method_defaults():
    from fedunl_flwr.methods import all_options

    defaults = pyproject_defaults()
    expected = {f.name.replace("_", "-"): f.default for f in fields(RunConfig)
                if f.name != "options"}
    expected.update({key: option.default for key, option in all_options().items()})
    assert defaults == expected


def test_every_key_is_documented():
    """Shared keys in the README's table, method-owned ones in docs/method-options.md."""
    from fedunl_flwr.config import PROJECT_ROOT
    from fedunl_flwr.methods import all_options

    readme = (PROJECT_ROOT / "README.md").read_text()
    options = (PROJECT_ROOT / "docs" / "method-options.md").read_text()
    owned = set(all_options())
    missing = [key for key in pyproject_defaults()
               if f"`{key}`" not in (options if key in owned else readme)]
    assert not missing, f"undocumented run-config keys {missing}"


def test_from_mapping_converts_kebab_case_and_coerces_ints_to_float():
    config = RunConfig.from_mapping({"num-server-rounds": 7, "learning-rate": 1, "rho": 0})
    assert config.num_server_rounds == 7
    assert config.learning_rate == 1.0 and isinstance(config.learning_rate, float)
    assert config.option("rho") == 0.0 and isinstance(config.option("rho"), float)
    assert RunConfig().option("rho") == 0.6  # the owning method's default


@pytest.mark.parametrize("values, message", [
    ({"no-such-key": 1}, "unknown run-config key 'no-such-key'"),
    ({"num-server-rounds": "5"}, "num-server-rounds must be an integer"),
    ({"num-server-rounds": 0}, "num-server-rounds must be >= 1"),
    ({"download": 1}, "download must be true or false"),
    ({"rho": 1.5}, "rho must be in [0, 1]"),
    ({"rho": -0.1}, "rho must be in [0, 1]"),
    ({"optimizer": "rmsprop"}, "optimizer must be 'adam' or 'sgd'"),
    ({"fraction-train": 0.0}, "fraction-train must be in (0, 1]"),
    ({"forget-scope": "everything"}, "forget-scope must be"),
    ({"scenario": 3}, "scenario must be a string"),
])
def test_bad_values_are_rejected_with_a_clear_message(values, message):
    with pytest.raises(ConfigError, match=__import__("re").escape(message)):
        RunConfig.from_mapping(values)


def test_training_key_ignores_unlearning_settings_but_unlearning_key_does_not():
    a = RunConfig.from_mapping({"strategy": "fedcccu", "rho": 0.3})
    b = RunConfig.from_mapping({"strategy": "fedmemeraser", "rho": 0.5})
    assert config_hash(a.training_key()) == config_hash(b.training_key())
    assert config_hash(a.unlearning_key()) != config_hash(b.unlearning_key())
    # a key another method owns does not change a run's folder
    a2 = RunConfig.from_mapping({"strategy": "fedcccu", "rho": 0.9})
    assert config_hash(a.unlearning_key()) == config_hash(a2.unlearning_key())
    b2 = RunConfig.from_mapping({"strategy": "fedmemeraser", "rho": 0.6})
    assert config_hash(b.unlearning_key()) != config_hash(b2.unlearning_key())
    c = RunConfig.from_mapping({"seed": 1})
    assert config_hash(c.training_key()) != config_hash(RunConfig().training_key())


def test_paths_are_not_part_of_the_keys():
    a = RunConfig.from_mapping({"data-dir": "/a", "results-dir": "/b"})
    assert a.unlearning_key() == RunConfig().unlearning_key()
    assert "data_dir" not in asdict(a) or "data_dir" not in a.training_key()


def test_parse_int_list():
    assert parse_int_list("0, 3,", "forget-clients") == [0, 3]
    assert parse_int_list("", "forget-clients") == []
    with pytest.raises(ConfigError, match="forget-clients must be comma-separated"):
        parse_int_list("0;3", "forget-clients")


def test_results_dir_from_env(monkeypatch, tmp_path):
    monkeypatch.setenv("FEDUNL_RESULTS_DIR", str(tmp_path))
    assert RunConfig().resolved_results_dir() == tmp_path.resolve()
    assert RunConfig(results_dir=str(tmp_path / "x")).resolved_results_dir() == \
        (tmp_path / "x").resolve()


def test_target_error_enters_the_training_key_only_when_set():
    fixed = RunConfig().training_key()
    assert "target_error" not in fixed  # stored phases of fixed-round runs keep their key
    assert RunConfig(target_error=0.05).training_key()["target_error"] == 0.05


def test_a_strategy_list_splits_into_one_config_per_method():
    config = RunConfig.from_mapping({"strategy": "fedmemeraser, not", "rho": 0.4})
    first, second = config.per_method()
    assert (first.strategy, second.strategy) == ("fedmemeraser", "not")
    # each keeps every other setting, and its key holds its own options only
    assert first.options == second.options == config.options
    assert first.run_key()["options"]["rho"] == 0.4 and "rho" not in str(second.run_key())
    assert RunConfig.from_mapping({"strategy": "not"}).per_method()[0].strategy == "not"
    with pytest.raises(ConfigError, match="several methods"):
        config.run_key()


@pytest.mark.parametrize(("strategy", "message"), [
    ("not,,fedau", "empty name"), ("not,not", "twice"), ("fedavg,not", "cannot be part"),
])
def test_a_bad_strategy_list_is_refused(strategy, message):
    with pytest.raises(ConfigError, match=message):
        RunConfig.from_mapping({"strategy": strategy}).per_method()


def test_a_request_is_keyed_by_what_it_names_not_how_it_is_written():
    def key(**values):
        return RunConfig.from_mapping({"strategy": "delete-retrain", **values}).unlearning_key()

    assert key(**{"forget-clients": "0,0"}) == key(**{"forget-clients": "0"})
    assert key(**{"forget-classes": "3, 1,1"}) == key(**{"forget-classes": "1,3"})
    assert key(**{"forget-clients": "1"}) != key(**{"forget-clients": "0"})
