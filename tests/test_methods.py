"""The method registry: self-registration, method-owned keys, generated documentation."""

from __future__ import annotations

import subprocess
import sys

import pytest

from fedunl_flwr import methods
from fedunl_flwr.config import PROJECT_ROOT, ConfigError, RunConfig
from fedunl_flwr.methods import Option, all_methods, get_method, register_method
from fedunl_flwr.server_app import check_names


def test_every_strategy_module_registers_its_method_once() -> None:
    registered = all_methods()
    assert {"delete-retrain", "relabel-poison", "delete-retrain-all", "neuron-zeroing",
            "fedcccu", "retrain", "finetune", "fedmemeraser"} <= set(registered)
    for name, method in registered.items():
        implementation = method.implementation
        assert implementation.name == name and implementation.scopes == method.scopes
        assert method.doc and method.scopes


def test_unknown_method_fails_before_any_work_and_lists_the_names() -> None:
    with pytest.raises(ValueError, match=r"unknown strategy 'halimi-typo'.*fedmemeraser"):
        check_names(RunConfig(strategy="halimi-typo"))
    with pytest.raises(ValueError, match="unknown strategy"):
        get_method("nope")


def test_a_name_registered_twice_or_a_shared_key_with_another_default_is_refused() -> None:
    class First:
        pass

    class Second:
        pass

    try:
        register_method("test-dup", doc="x")(First)
        with pytest.raises(ValueError, match="registered twice"):
            register_method("test-dup", doc="x")(Second)
        with pytest.raises(ValueError, match="option 'rho' of 'test-rho' differs"):
            register_method("test-rho", doc="x", options=(Option("rho", 0.9, "other"),))(Second)
    finally:
        methods._METHODS.pop("test-dup", None)
        methods._METHODS.pop("test-rho", None)


def test_method_owned_keys_are_typed_and_validated_by_their_rule() -> None:
    config = RunConfig.from_mapping({"strategy": "fedcccu", "zero-units": 7})
    assert config.option("zero-units") == 7 and config.option("zero-stop") is True
    with pytest.raises(ConfigError, match="zero-units must be >= 1, got 0"):
        RunConfig.from_mapping({"zero-units": 0})
    with pytest.raises(ConfigError, match="zero-units must be an integer"):
        RunConfig.from_mapping({"zero-units": 1.5})
    with pytest.raises(ConfigError, match="fair-others must be 'global' or 'cached'"):
        RunConfig.from_mapping({"fair-others": "mine"})
    with pytest.raises(ConfigError, match=r"unknown run-config key 'rh0'.*rho"):
        RunConfig.from_mapping({"rh0": 0.4})
    with pytest.raises(KeyError, match="no method owns"):
        RunConfig().option("no-such-key")


def test_readme_and_pyproject_are_generated_from_the_registry() -> None:
    result = subprocess.run([sys.executable, str(PROJECT_ROOT / "scripts" / "method_tables.py")],
                            capture_output=True, text=True, cwd=PROJECT_ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_render_generated_replaces_only_between_markers() -> None:
    text = "a\n<!-- b -->\nold\n<!-- e -->\nz\n"
    assert methods.render_generated(text, "<!-- b -->", "<!-- e -->", "new") == \
        "a\n<!-- b -->\nnew\n<!-- e -->\nz\n"
    with pytest.raises(ValueError, match="markers"):
        methods.render_generated("no markers", "<!-- b -->", "<!-- e -->", "new")
