"""scalinglab's Hydra configs, shipped in the package: `pkg://scalinglab.conf`."""
