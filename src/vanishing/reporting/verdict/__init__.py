"""Verdicts on gradient flow, read from every signal the probes record: the back-propagated
signal (dLoss/dh) across the hidden layers, the activations' scale (their std) across the same
layers, the size of the gradient norms, divergence and the final test loss (a regression's
against its baseline), with saturation and dead units; through time, a recurrent layer's
gradient from the last step of the sequence back to the first, and its gates; each verdict
names the layers (or the steps) and the factor, and the cure that fits what the run already
uses.

The modules, one job each, in the order a verdict is made:
- `thresholds`: every threshold (`Thresholds`), and the chance level they are set against;
- `profile`: what the records say about the layers at step 0 (`Profile`, `profile`);
- `time_profile`: what they say through time, per recurrent layer and step (`TimeProfile`);
- `rules`: which failure a point, or a run's latest rows, shows, as data (the kinds of finding);
- `sentences`: the findings in words; `cures`: the cure for the worst one;
- `judging`: a point's `Verdict` (`judge`) and one run's line (`headline`);
- `live`: the line for a run still training (`live_headline`), by the same rules.
"""

from vanishing.reporting.verdict.judging import Verdict, headline, judge
from vanishing.reporting.verdict.live import live_headline
from vanishing.reporting.verdict.profile import Profile, profile, setting_value, signal_of
from vanishing.reporting.verdict.rules import (
    FAILURES,
    NOTES,
    WORDS,
    at_chance,
    ratio_verdict,
    scale_word,
    signal_word,
)
from vanishing.reporting.verdict.sentences import fold
from vanishing.reporting.verdict.thresholds import (
    SATURATED,
    THRESHOLDS,
    Thresholds,
    chance_level,
)
from vanishing.reporting.verdict.time_profile import TimeLayer, TimeProfile, time_profile

__all__ = [
    "FAILURES",
    "NOTES",
    "SATURATED",
    "THRESHOLDS",
    "WORDS",
    "Profile",
    "Thresholds",
    "TimeLayer",
    "TimeProfile",
    "Verdict",
    "at_chance",
    "chance_level",
    "fold",
    "headline",
    "judge",
    "live_headline",
    "profile",
    "ratio_verdict",
    "scale_word",
    "setting_value",
    "signal_of",
    "signal_word",
    "time_profile",
]
