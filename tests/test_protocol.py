"""The message protocol: what a strategy encodes, a client decodes to the same thing."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from fedunl_flwr.config import ConfigError
from fedunl_flwr.protocol import DataChange, ForgetSelection, decode_ids, encode_ids

ROOT = Path(__file__).resolve().parents[1]


def test_ids_round_trip_and_bad_input_names_the_key() -> None:
    assert decode_ids(encode_ids([3, 0, 12]), "k") == [3, 0, 12]
    assert decode_ids("", "k") == [] and decode_ids(None, "k") == []
    with pytest.raises(ConfigError, match="exclude-classes"):
        decode_ids("1,x", "exclude-classes")


@pytest.mark.parametrize("change", [
    DataChange(), DataChange(exclude_classes=(0, 3)), DataChange(exclude_samples=(5, 9, 11)),
    DataChange(relabel_classes=(2,)), DataChange((1,), (4,), (7, 8)),
])
def test_data_change_round_trip(change: DataChange) -> None:
    encoded = change.encode()
    assert all(isinstance(v, str) for v in encoded.values())
    assert DataChange.from_config(encoded) == change
    assert bool(change) == bool(encoded)


@pytest.mark.parametrize("selection", [
    ForgetSelection(), ForgetSelection(everything=True), ForgetSelection(classes=(0, 3)),
    ForgetSelection(samples=(2, 4, 6)),
])
def test_forget_selection_round_trips_through_messages_and_node_config(
        selection: ForgetSelection) -> None:
    assert ForgetSelection.from_config(selection.encode()) == selection
    assert ForgetSelection.parse(selection.describe()) == selection


def test_forget_selection_compares_normalised_and_rejects_unknown_kinds() -> None:
    assert ForgetSelection.parse("samples:7,3,3").normalised() == ForgetSelection(
        samples=(7, 3)).normalised()
    assert ForgetSelection.parse("classes:1") != ForgetSelection.parse("samples:1")
    with pytest.raises(ValueError, match="forget-request"):
        ForgetSelection.parse("everything")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
    return names


def test_strategies_and_clients_talk_only_through_the_protocol() -> None:
    for path in (ROOT / "strategies").glob("*.py"):
        assert "clients" not in _imports(path), f"{path.name} imports clients/"
    for path in (ROOT / "clients").glob("*.py"):
        assert "strategies" not in _imports(path), f"{path.name} imports strategies/"


#: The app's entry points: they may import the plugin packages (and nothing else may).
ENTRY_POINTS = {"server_app.py", "client_app.py"}


def test_the_core_imports_no_plugin_package_outside_the_entry_points() -> None:
    for path in (ROOT / "fedunl_flwr").rglob("*.py"):
        if path.name in ENTRY_POINTS:
            continue
        plugins = _imports(path) & {"strategies", "clients"}
        assert not plugins, f"{path.relative_to(ROOT)} imports {sorted(plugins)}"


def test_a_client_process_never_imports_the_method_modules() -> None:
    """The client side reads its run-config without the registry (which would import
    every strategy module); the server checks the methods' keys."""
    import subprocess
    import sys

    code = ("import sys\n"
            "from fedunl_flwr.client_app import load_run_config\n"
            "config = load_run_config({}, {'rho': 0.3, 'zero-units': 7}, check_methods=False)\n"
            "assert dict(config.options)['rho'] == 0.3, config.options\n"
            "assert 'strategies' not in sys.modules, 'a client imported strategies'\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr
