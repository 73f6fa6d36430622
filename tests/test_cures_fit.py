"""Cures that fit the cause: a growth the literature expects is not cured by breaking what works
(SELU at lecun init grows towards its fixed point from MNIST's raw pixels: standardise the
inputs, keep the init), an activation with a fixed point gets the init it assumes, and a run that
did not learn because its steps were too large is told to lower its learning rate."""

from __future__ import annotations

import pytest

from test_diagnosis import verdict_of, write_run
from vanishing import records

GROWING = {"depth": 30, "signal_step": 1.1, "scale_step": 1.03}


def test_selu_at_lecun_init_grows_by_design_and_the_inputs_are_the_cure(tmp_path):
    found = verdict_of(write_run(tmp_path / "r", activation="selu", init="lecun", **GROWING))
    assert found.kinds[0] == "growing"
    said = " ".join(found.sentences)
    assert "SELU with lecun init is self-normalising (Klambauer et al. 2017)" in said
    assert "(the activations' std goes from 0.5 at layer 1 to 1.18 at layer 30)" in said
    assert found.cure.startswith("Cure: standardise the inputs (each feature to mean 0, std 1)")
    assert "init-gain" not in found.cure and "smaller" not in found.cure.split(";")[0]


@pytest.mark.parametrize(
    ("settings", "cure"),
    [
        # Not at its own init: the init the fixed point assumes.
        ({"init": "default"}, "Cure: lecun init, the one SELU's fixed point assumes"),
        ({"init": "kaiming"}, "Cure: lecun init, the one SELU's fixed point assumes"),
        # Its own init made larger: the gain is what grows it.
        ({"init": "lecun", "init_gain": 1.5}, "Cure: a lower --init-gain (1.5 here"),
    ],
)
def test_selu_away_from_its_fixed_point_init(tmp_path, settings, cure):
    found = verdict_of(write_run(tmp_path / "r", activation="selu", **GROWING, **settings))
    assert found.cure.startswith(cure), found.cure
    assert "self-normalising" not in " ".join(found.sentences)


def test_other_activations_growing_still_shrink_their_init(tmp_path):
    found = verdict_of(write_run(tmp_path / "r", activation="elu", init="lecun", **GROWING))
    assert found.cure.startswith("Cure: a smaller initial weight scale (--init-gain below 1)")


def units_run(tmp_path, name, activation, share, accuracy):
    """A run whose worst layer has `share` dead (rectifier) or saturated (else) units."""
    key = "dead_fraction" if activation == "relu" else "saturated_fraction"
    run_dir = write_run(tmp_path / name, activation=activation, depth=4, accuracy=accuracy)
    result = records.read_json(run_dir / records.RESULT)
    result[key] = [0.0, 0.0, 0.0, share]
    result["history"][0][key] = [0.0, 0.0, 0.0, share]
    records.write_json(run_dir / records.RESULT, result)
    return verdict_of(run_dir)


@pytest.mark.parametrize("activation", ["relu", "sigmoid"])
def test_dead_and_saturated_units_are_judged_alike(tmp_path, activation):
    kind = "dead" if activation == "relu" else "saturated"
    cure = "leaky ReLU or PReLU" if activation == "relu" else "batch norm keeps pre-activations"
    # Over the threshold in a net that learned: named, no cure.
    spared = units_run(tmp_path, "spared", activation, 0.3, accuracy=0.97)
    assert kind in spared.kinds and cure not in spared.cure
    assert "It learned regardless (97.00 %): under half of any layer is lost" in " ".join(
        spared.sentences
    )
    # Half a layer lost, or a net that did not learn: named with the cure.
    for name, share, accuracy in (("half", 0.5, 0.97), ("chance", 0.3, 0.1)):
        hurt = units_run(tmp_path, name, activation, share, accuracy)
        assert kind in hurt.kinds and cure in hurt.cure, (name, hurt.cure)
        assert "learned regardless" not in " ".join(hurt.sentences)
