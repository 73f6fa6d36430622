"""vanishing: see and measure the vanishing-gradient problem in MLPs on MNIST."""

__version__ = "0.1.0"
