"""Weights in and out: one resolver from any location to a model, safe loading, reference layouts, every writer."""
