"""The network: the activation registry, the MLP and its grouped form, inits and optimizers."""
