"""Every threshold the verdicts use, in one place, and the chance level the loss and the
accuracy are set against."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from vanishing import stats
from vanishing.data.datasets import DATASETS
from vanishing.model.activations import SATURATION_FRACTION


@dataclass(frozen=True)
class Thresholds:
    """Every threshold the diagnosis uses, in one place."""

    # The back-propagated signal dLoss/dh at layer 1 over the last hidden layer's, at step 0.
    # Under 1 %: layer 1's weight gradient (signal times its input) is 100x smaller than it would
    # be at an even signal, and so are its SGD steps, two orders of magnitude: vanishing.
    signal_vanishing: float = 1e-2
    # Under 10 %: attenuated; visible, but Adam's per-weight step scaling largely hides it.
    signal_attenuated: float = 0.1
    # The mirror images: over 10x growing, over 100x exploding, a step 100x too large at layer 1.
    signal_growing: float = 10.0
    signal_exploding: float = 100.0
    # The activations' std at the last hidden layer over layer 1's, at step 0. Under 1 %: the
    # last layer's outputs vary 100x less than the first's; what reaches the output layer hardly
    # depends on the input (forward collapse). Over 100x: forward blow-up, logits so large that
    # the softmax saturates and the loss is huge.
    scale_collapse: float = 1e-2
    scale_blowup: float = 100.0
    # A weight gradient of norm 1000 (the loss is a mean over the batch): an SGD step at lr 0.01
    # moves that layer by 10, about the whole norm of a 256-wide layer at He init (~16); healthy
    # nets on MNIST start near 0.1 to 10. Above it at step 0, or at any probe later: exploding.
    grad_norm_huge: float = 1e3
    # A final test loss over 10x chance's, ln(classes): the true class gets e^-23 of the
    # probability on average on 10 classes. Overfitting stays within a few times chance's; this
    # is a run whose updates blew up, even if no number became inf (lr 1e9: a loss of 6e25).
    loss_blowup: float = 10.0
    # Within 5 points of chance (1 / classes): the most common class alone gives 11.35 % on
    # MNIST's test set; a net that does no better has not learned.
    chance_margin: float = 0.05
    # The weight-gradient ratio, layer 1 over the output layer, at step 0: the old single verdict,
    # still what a one-hidden-layer net is judged by and what the depth figure draws. Under 1 %:
    # vanishing; under 10 %: attenuated; over 10x: exploding.
    vanishing_ratio: float = 1e-2
    attenuated_ratio: float = 0.1
    exploding_ratio: float = 10.0
    # A layer with 5 % or more of its units dead (zero on every training image) is worth naming.
    dead_fraction: float = 0.05
    # 20 % or more saturated (sample, unit) pairs: a fifth of the signal passes a slope < 10 % max.
    saturated_fraction: float = 0.2
    # Dead or saturated units hurt, and get a cure, when the network did not learn or half of a
    # layer's units (or activations) pass no gradient: that layer has lost half of what it can
    # learn. Below that, in a net that learned, they are named with no cure (the seed's ReLU MLP:
    # 6.6 % of its units dead at 97.78 %; its sigmoid MLP: 45 % saturated at 97.66 %).
    units_hurt: float = 0.5
    # The optimizer's steps, read from the update ratio ||dW|| / ||W|| of each weighted layer (a
    # step's size relative to the weights it moves). Layer 1's under a tenth of the output
    # layer's at step 0: its steps are an order of magnitude slower, so a small gradient slows
    # its learning (SGD: 7,700x on the reference sigmoid MLP at lr 0.1). Adam and RMSprop divide
    # each weight's step by its own gradient's running size: the same net moves layer 1 at 1.9x
    # the output layer's rate under Adam.
    steps_slow: float = 0.1
    # A step as large as the weights it moves (update ratio 1 or more at any probe) replaces
    # them rather than adjusting them: the learning rate is too large. On the reference MLP Adam
    # and AdamW at lr 0.1 reach 3.6-3.9 and RMSprop at 0.1 35-38 (all at chance); the runs that
    # learn stay under 0.4 (RMSprop at 1e-3 peaks at 0.38 on its first step, Adam at 0.04).
    steps_large: float = 1.0
    # Steps under 1e-4 of the weights at every probe in every layer: even 1,000 such steps move a
    # layer by a tenth of its norm. SGD at lr 1e-3 on the reference ReLU MLP peaks at 2.6e-5 and
    # stays at chance after an epoch; at lr 0.1, 0.03 and 92.6 %.
    steps_tiny: float = 1e-4
    # The t-tests on test accuracy (paired on shared seeds, else Welch's): the usual 5 % level.
    p_value: float = stats.ALPHA
    # One seed a side: a gap over 5x the largest seed std measured in the same report is no seed
    # effect (two single runs differ by sqrt(2) std on average; 5x is z ~ 3.5, p ~ 0.0005).
    spread_multiple: float = 5.0
    # One seed a side: a gap between a point at chance and one more than half way from chance to
    # 100 % (55 % on 10 classes) is not seed noise: the one did not learn, the other did.
    far_above_chance: float = 0.5
    # An activation has stopped learning at a depth where its mean test accuracy is less than
    # half way from chance (1 / classes) to the best point's mean on the same data set: below
    # 53.5 % on MNIST when the best reaches 97 %. Relative, so it holds on harder data sets too.
    stop_fraction: float = 0.5
    # Through time, per recurrent layer: ||dLoss/dh_t|| at step 1 over step T's (the gradient
    # that reaches the first step of the sequence, from the last). Under 1 %, as across layers:
    # what step 1's input contributes to the weight gradient is 100x smaller than step T's, and
    # a dependency that spans the sequence cannot be learned. At initialisation PyTorch's tanh
    # RNN keeps 0.57 of it per step (3e-7 over 28 rows of an image); an IRNN 0.98 to 0.999.
    time_vanishing: float = 1e-2
    # Over 100x at any probe: the gradient grows on its way back through time (a recurrent
    # weight whose largest singular value is well over 1): exploding through time.
    time_exploding: float = 100.0
    # A gate that keeps the memory (an LSTM's forget gate, a GRU's update gate) whose mean is
    # under 0.6: the cell keeps under 0.6 of its content per step, 1 % after 9 steps. PyTorch's
    # LSTM starts at 0.5 (bias 0); a forget-gate bias of 1 starts it at 0.73 (Jozefowicz et al.
    # 2015), and a trained LSTM that carries memory keeps 0.9 and more.
    gate_closed: float = 0.6
    # Half a layer's gate values under 0.05 or over 0.95: half its gates pass under a fifth of
    # a sigmoid's largest slope back to their weights, which then learn slowly.
    gates_saturated: float = 0.5
    # A regression (the adding problem) is set against its baseline, the test loss of always
    # answering the targets' mean (about 0.167). Within 10 % of it (above 0.9 x baseline): it
    # explains under a tenth of the targets' variance, it has not learned.
    baseline_margin: float = 0.1
    # A regression's test loss over 100x the baseline's: answers off by 4 on targets between 0
    # and 2 (a fresh network answering 0 scores 7x the baseline): the updates blew up.
    regression_blowup: float = 100.0


THRESHOLDS = Thresholds()
SATURATED = f"{100 * SATURATION_FRACTION:g} %"  # the probes' saturation rule, as the page says it
CHANCE_CLASSES = 10  # the chance level's class count for a data set missing from the registry


def chance_level(dataset: Any) -> float:
    """Accuracy of guessing: 1 / the number of classes."""
    spec = DATASETS.get(dataset) if isinstance(dataset, str) else None
    # A regression (the adding problem) has no classes, and no chance accuracy: its baseline
    # is a loss (`baseline_loss`); the count here only keeps a reader from dividing by zero.
    return 1 / (len(spec.classes) if spec is not None and spec.classes else CHANCE_CLASSES)


def chance_loss(dataset: Any) -> float:
    """The cross-entropy of guessing: ln(the number of classes)."""
    return -math.log(chance_level(dataset))
