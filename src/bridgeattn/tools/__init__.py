"""Tools over the library: comparisons, explanations, timing, cost counting, scoring saved weights, the demo."""
