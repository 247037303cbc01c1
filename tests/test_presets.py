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


def test_seeds_and_sections_multiply_the_runs(tmp_path) -> None:
    from experiments.run import PresetError, load_preset

    _, preset = load_preset("mem-table1-fashion-cpu")
    runs = preset["runs"]
    assert len(runs) == 2 * 3 * 11  # sections x seeds x rows
    assert {(r["scenario"], r["seed"]) for r in runs} == {
        (s, k) for s in ("fashion-mnist-iid", "fashion-mnist-dir0.5") for k in (0, 1, 2)}
    assert sum(r["strategy"] == "fedau" for r in runs) == 6
    assert next(r for r in runs if r.get("rho") == 0.4)["label"] == "Ours (ρ = 0.4)"
    bad = tmp_path / "bad.toml"
    bad.write_text('report = "memorization"\nseeds = [-1]\n[[runs]]\nstrategy = "finetune"\n')
    with pytest.raises(PresetError, match="seeds must be"):
        load_preset(str(bad))
