"""Forward collapse that biases hide: how much each layer's output depends on the input is each
unit's std across samples (`probes.spread`), not the whole tensor's std, which also counts the
spread that biases put between units. Checked against a float64 reference, on a deep ReLU net at
PyTorch's default init (collapsed, though its std keeps a quarter of its size) and on one built
not to collapse (He init)."""

from __future__ import annotations

import numpy as np
import torch

from test_diagnosis import trained, verdict_of, write_run
from vanishing.measure import probes
from vanishing.model.activations import get_activation
from vanishing.model.mlp import GroupedMLP, build_model


def reference_spread(output: np.ndarray) -> float:
    """sqrt(mean over units of the variance over samples), in float64."""
    return float(np.sqrt(np.mean(np.var(output.astype(np.float64), axis=0))))


def test_spread_is_each_units_std_across_samples_not_the_tensors():
    g = torch.Generator().manual_seed(0)
    varying = torch.randn(64, 8, generator=g) * 0.01
    output = varying + torch.arange(8.0) * 3  # biases spread the units apart, not the samples
    assert np.isclose(float(probes.spread(output)), reference_spread(output.numpy()), rtol=1e-5)
    assert float(probes.spread(output)) < 0.011 < float(output.std())
    assert torch.isnan(probes.spread(output[:1]))  # one sample: nothing to compare
    conv = torch.randn(16, 3, 5, 5, generator=g)  # per unit and position
    assert np.isclose(float(probes.spread(conv)), reference_spread(conv.numpy()), rtol=1e-6)


def test_the_probe_records_the_spread_of_every_layer_and_of_the_logits():
    model = build_model((32,) * 6, "relu", seed=0)
    x, y = torch.rand(128, 784, generator=torch.Generator().manual_seed(1)), torch.arange(128) % 10
    row = probes.measure(model, get_activation("relu"), x, y)
    with torch.no_grad():  # float64 reference
        logits, _, _, hidden = model.double().forward_hidden(x.double(), "batch")
    expected = [reference_spread(h.numpy()) for h in hidden]
    np.testing.assert_allclose(row["activation_spread"], expected, rtol=1e-5)
    assert np.isclose(row["logits_spread"], reference_spread(logits.numpy()), rtol=1e-5)
    # The grouped trainer's probe measures the same for each of its models.
    models = [build_model((32,) * 6, name, seed=s) for s, name in enumerate(["relu", "tanh"])]
    rows = probes.measure_group(
        GroupedMLP.from_models(models), x.expand(2, -1, -1), y.expand(2, -1)
    )
    for model, grouped in zip(models, rows, strict=True):
        single = probes.measure(model, model.activation, x, y)
        np.testing.assert_allclose(
            grouped["activation_spread"], single["activation_spread"], rtol=1e-5
        )
        assert np.isclose(grouped["logits_spread"], single["logits_spread"], rtol=1e-5)


def test_a_deep_relu_net_at_default_init_collapses_though_its_std_does_not(tmp_path, tiny_data):
    found = trained(tmp_path, tiny_data, hidden=(64,) * 40)
    profile = found.profile
    assert profile.spread_factor < 1e-6 and profile.scale_factor > 1e-2  # biases keep the std
    assert "forward-collapse" in found.kinds
    (sentence,) = [s for s in found.sentences if s.startswith("Forward collapse")]
    assert sentence.startswith(
        "Forward collapse: how much the activations depend on the input (each unit's std across "
        f"samples) falls {1 / profile.spread_factor:.1e}-fold from layer 1 to layer 40"
    )
    assert f"though their std keeps ×{profile.scale_factor:.3g} of its size" in sentence
    assert "the logits vary" in sentence and sentence.endswith("on the input.")


def test_he_init_keeps_the_output_dependent_on_the_input(tmp_path, tiny_data):
    found = trained(tmp_path, tiny_data, hidden=(64,) * 10, init="kaiming")
    assert 0.1 < found.profile.spread_factor < 10
    assert "forward-collapse" not in found.kinds


def test_older_records_without_the_spread_read_the_std(tmp_path):
    found = verdict_of(write_run(tmp_path / "r", depth=10, scale_step=0.5))
    assert "forward-collapse" in found.kinds and not found.profile.by_spread
    assert any(
        s.startswith("Forward collapse: the activations' scale (std) falls")
        for s in found.sentences
    )
