"""Measuring gradient flow: the probes' quantities, what they mean, and watch() for any model."""
