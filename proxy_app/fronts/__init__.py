"""Fronts: one module per client API, parsing its wire format in and rendering the exchange out."""
