"""Figures and README tables drawn from saved result tables."""
