"""The data sets: finding, verifying and caching MNIST and Fashion-MNIST; the IDX format."""
