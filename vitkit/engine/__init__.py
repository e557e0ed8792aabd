"""The training engine: build components from a recipe, train, evaluate, checkpoint."""
