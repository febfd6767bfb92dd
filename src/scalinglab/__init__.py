"""scalinglab: neural scaling-law studies. `scalinglab.load_model(path)` gives a run's trained GPT."""

from __future__ import annotations

__all__ = ["load_model"]


def __getattr__(name: str) -> object:
    # Imported on first use: `import scalinglab` (every entry point's first step) stays free of
    # torch and Lightning.
    if name == "load_model":
        from scalinglab.export import load_model

        return load_model
    raise AttributeError(f"module 'scalinglab' has no attribute {name!r}")
