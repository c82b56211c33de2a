"""The sample-data generator (`custlens generate`): a simulated shop's exports and the ground truth
behind them. `features.sample.generate` is the entry point; its docstring maps the modules."""
