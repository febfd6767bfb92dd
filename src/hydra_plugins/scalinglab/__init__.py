"""scalinglab's Hydra plugins: Hydra instantiates sweepers and launchers only from `hydra_plugins`."""
