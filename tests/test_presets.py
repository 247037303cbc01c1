"""Preset validation: every shipped preset is valid, and a missing dataset stops it early."""

from __future__ import annotations

import pytest

from experiments.run import available_presets, main


@pytest.mark.parametrize("name", [n for n in available_presets() if n.endswith("-cpu")])
def test_every_cpu_preset_dry_runs_on_the_offline_data(name, data_dir, monkeypatch,
                                                       capsys) -> None:
    monkeypatch.setenv("FEDUNL_DATA_DIR", str(data_dir))
    assert main([name, "--dry-run"]) == 0, capsys.readouterr().err
    assert "valid" in capsys.readouterr().out


def test_dry_run_names_a_missing_dataset(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("FEDUNL_DATA_DIR", str(tmp_path))  # an empty folder
    assert main(["mem-fmnist-reference-cpu", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "fashion-mnist" in err and str(tmp_path) in err
