"""Plots, the manuscript's figures and the manuscript's variables, read from the stages' results."""
